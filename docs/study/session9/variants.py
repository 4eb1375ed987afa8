"""Candidate decoders/encoders for issue 12 experiments (not part of the package)."""
from torch import nn
import torch
from aelab.models.layers import ConvTranspose2d, Reshape, act, norm2d, norm1d, drop, channels
from aelab.models.registry import Autoencoder, register


class Res(nn.Module):
    def __init__(self, c, activation="relu", bn=True):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), act(activation),
                               nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.a = act(activation)
    def forward(self, x):
        return self.a(x + self.f(x))


def make(latent, variant="base", width=1.0, dropout=0.1, activation="relu", c3mult=1.0):
    bn = True
    c1, c2, c3 = channels(32, width), channels(64, width), channels(int(128 * c3mult), width)
    def block(cin, cout, stride=1):
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), *norm2d(cout, bn), act(activation)]
    def up(cin, cout):
        return [ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), *norm2d(cout, bn), act(activation)]
    enc = [*block(1, c1), *block(c1, c1, 2), *block(c1, c2), *block(c2, c2, 2), *block(c2, c3)]
    dec_head = [nn.Linear(latent, c3 * 49), *norm1d(c3 * 49, bn), act(activation), Reshape(c3, 7, 7)]
    if variant == "base":
        dec = [*block(c3, c2), *up(c2, c2), *block(c2, c1), *up(c1, c1)]
    elif variant == "res7":      # a residual block at 7x7 after the head
        dec = [Res(c3, activation), *block(c3, c2), *up(c2, c2), *block(c2, c1), *up(c1, c1)]
    elif variant == "res14":     # residual at 14x14 instead of the plain block's second half
        dec = [*block(c3, c2), *up(c2, c2), Res(c2, activation), *block(c2, c1), *up(c1, c1)]
    elif variant == "conv28":    # one more 3x3 conv at 28x28 before the output
        dec = [*block(c3, c2), *up(c2, c2), *block(c2, c1), *up(c1, c1), *block(c1, c1)]
    elif variant == "encres":    # residual in both encoder (7x7) and decoder (7x7)
        enc = enc + [Res(c3, activation)]
        dec = [Res(c3, activation), *block(c3, c2), *up(c2, c2), *block(c2, c1), *up(c1, c1)]
    else:
        raise ValueError(variant)
    encoder = nn.Sequential(*enc, nn.Flatten(), *drop(dropout), nn.Linear(c3 * 49, latent))
    decoder = nn.Sequential(*dec_head, *dec, nn.Conv2d(c1, 1, 3, padding=1))
    return Autoencoder(encoder, decoder, dict(model="conv-modified", latent=latent))
