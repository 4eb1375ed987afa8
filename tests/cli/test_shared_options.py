"""The option blocks several commands take are declared once (``cli.options``) and reused: each shared option reads
and checks the same in every command that takes it, and a number outside its range is one line, exit code 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from aelab.cli import main
from aelab.config import RunConfig

# options several commands take, and what may differ between them (a parameterised help or default)
SHARED = {"--quiet": (), "--batch-size": (), "--limit": (), "--resize": (), "--data-dir": (), "--checkpoint": (),
          "--scale": ("help",), "--threads": ("help", "default"), "--preset": ("help",), "--config": ("help",),
          "--seed": ("help",), "--force": ("help",), "--quantile": ("help", "default")}
REPO = Path(__file__).resolve().parents[2]


def _describe(opt: click.Option) -> dict[str, Any]:
    return {"decls": tuple(opt.opts + opt.secondary_opts), "name": opt.name, "type": opt.type.to_info_dict(),
            "flag": opt.is_flag, "default": opt.default, "help": opt.help, "callback": opt.callback is not None}


def _options(flag: str) -> dict[str, dict[str, Any]]:
    """{command: the description of its ``flag`` option} over every command that has one, less the RunConfig
    fields of the commands that take every training option (``config_options``: a block of its own)."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    out = {}
    for name, cmd in main.commands.items():
        training = {p.name for p in cmd.params} >= fields
        for p in cmd.params:
            if isinstance(p, click.Option) and flag in p.opts and not (training and p.name in fields):
                out[name] = _describe(p)
    return out


@pytest.mark.parametrize("flag", sorted(SHARED))
def test_a_shared_option_is_the_same_in_every_command(flag: str) -> None:
    found = _options(flag)
    assert len(found) >= 2, f"{flag} is no longer shared: {sorted(found)}"
    if flag == "--force":
        found = {k: v for k, v in found.items() if k != "export"}  # export's --force: the hub folder's own
    free = SHARED[flag]
    kinds = {tuple((k, str(v)) for k, v in d.items() if k not in free) for d in found.values()}
    assert len(kinds) == 1, f"{flag} differs between commands: {found}"


@pytest.mark.parametrize("flag", ["--quiet", "--batch-size", "--limit", "--resize", "--data-dir", "--checkpoint",
                                  "--scale", "--preset", "--seed", "--threads", "--quantile"])
def test_only_the_options_module_declares_a_shared_option(flag: str) -> None:
    """A command module declares none of them itself (train's --nproc launcher only passes them on)."""
    for module in sorted((REPO / "src" / "aelab" / "cli").glob("*.py")):
        if module.name == "options.py":
            continue
        text = module.read_text()
        assert f'click.option("{flag}"' not in text and f"click.option('{flag}'" not in text, \
            f"{module.name} declares {flag} again; use the block in cli/options.py"


@pytest.mark.parametrize("args, says", [
    (["explore", "RUN", "--threads", str(10**11), "--no-open"], "invalid threads 100000000000; use --threads between"),
    (["explore", "RUN", "--threads", "0", "--no-open"], "invalid threads 0; use --threads between 1 and"),
    (["study", "--threads", "-3", "--no-train"], "invalid threads -3; use --threads between 1 and"),
    (["denoise", "RUN", "fashion-mnist:test", "-o", "OUT", "--add-noise", "gaussian:0.3", "--seed", "-1"],
     "invalid seed -1; use --seed between 0 and"),
    (["encode", "RUN", "fashion-mnist:test", "-o", "OUT/codes.npy", "--batch-size", str(10**15)],
     "1<=x<=1048576"),
    (["score", "RUN", "fashion-mnist:test", "-o", "OUT/s.csv", "--quantile", "2"],
     "--quantile 2: give a quantile in (0, 1)"),
    (["score", "RUN", "fashion-mnist:test", "-o", "OUT/s.csv", "--threshold", "nan"],
     "invalid threshold nan; give a finite number"),
    (["anomaly", "--normal", "0", "--quantile", "nan", "--out", "OUT"], "--quantile nan: give a quantile in"),
])
def test_a_number_out_of_range_is_one_line_exit_2(tiny_run, tmp_path: Path, args: list[str], says: str) -> None:
    """Before: explore crashed in torch.set_num_threads with a traceback after loading the run (issue 29, class
    'every number a user gives'), score in numpy's quantile after scoring; denoise took any seed, encode any batch
    size, score a threshold of NaN (nothing flagged, without a word)."""
    out = tmp_path / "out"
    args = [str(tiny_run[0].path) if a == "RUN" else a.replace("OUT", str(out)) for a in args]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert says in res.stderr.strip().splitlines()[-1] and "Traceback" not in res.output
    assert not out.exists()
