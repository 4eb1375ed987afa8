"""Every number and every config file a user gives: checked at its owner, refused in one line, never a traceback.

Regression tests for the cases of issue 29 (a YAML alias bomb, seeds outside the generators' range, a byte-order
mark, upper-case suffixes, a run name that is a path), property tests over every number option of ``RunConfig``
(``validate`` passes or raises ``ConfigError``; ``aelab train --OPTION VALUE`` refuses an invalid value with exit
code 2 and one line, before any data is read), and the model vocabulary: defined once, read by the
configuration, and the registry's families are exactly its names.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aelab.cli import main
from aelab.config import RunConfig, read_config_file, resolve
from aelab.errors import ConfigError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text and len(text) < 400, text
    return text


# ------------------------------------------------------------------------------------------ config files
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)) + \
    "classes: *i\n"  # 9**9 = 387 million strings once copied, from 10 lines


def test_a_yaml_alias_bomb_is_refused_in_one_line_before_it_expands(tmp_path: Path) -> None:
    """Issue 29, case 5: a small config file must not expand to gigabytes."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(LAUGHS)
    assert bomb.stat().st_size < 1000
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="alias") as err:
        read_config_file(bomb)
    one_line(err.value)
    assert time.perf_counter() - t0 < 5
    small = tmp_path / "small.yaml"  # the same construct at a harmless size is refused too: aliases are not options
    small.write_text("base: &b 8\nlatent: *b\n")
    with pytest.raises(ConfigError, match=r"alias \(\*b\)"):
        resolve(config_file=small)


def test_files_of_options_are_bounded_in_size_and_depth(tmp_path: Path) -> None:
    cases = {"deep.yaml": "latent: " + "[" * 5000 + "]" * 5000 + "\n", "deep.toml": "latent = " + "[" * 5000
             + "]" * 5000 + "\n", "long.yaml": "latent: " + "1" * 5000 + "\n",
             "big.yaml": "# padding\n" * 200_000 + "latent: 8\n"}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=str(path)) as err:
            resolve(config_file=path)
        one_line(err.value)


@pytest.mark.parametrize("name, text", [("bom.yaml", "latent: 8\n"), ("bom.toml", "latent = 8\n"),
                                        ("upper.YAML", "latent: 8\n"), ("upper.Yml", "latent: 8\n"),
                                        ("upper.TOML", "latent = 8\n"), ("bom.TOML", "latent = 8\n")])
def test_a_byte_order_mark_or_an_upper_case_suffix_is_read(tmp_path: Path, name: str, text: str) -> None:
    """Issue 29, case 9: Windows editors write a byte-order mark; some systems upper-case the suffix."""
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if name.startswith("bom") else b"") + text.encode())
    assert resolve(config_file=path).latent == 8


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/b", "..", ".", "", "  ", "x" * 300, "a\\b"])
def test_a_run_name_is_a_plain_folder_name(tmp_path: Path, name: str) -> None:
    """Issue 29, case 10: 'name:' in a config file must not place the run outside the runs folder."""
    path = tmp_path / "c.yaml"
    path.write_text(f"name: {name!r}\n")
    with pytest.raises(ConfigError, match="invalid name") as err:
        resolve(config_file=path)
    one_line(err.value)
    assert resolve(overrides={"name": "my run-2 (ok)"}).name == "my run-2 (ok)"


def test_a_run_name_with_a_path_never_reaches_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path / "..")
    path = tmp_path / "c.yaml"
    path.write_text("name: ../escaped-run\nepochs: 1\ntrain_limit: 100\n")
    result = CliRunner().invoke(main, ["train", "--config", str(path), "-q"])
    assert result.exit_code == 2 and "invalid name" in result.output, result.output
    assert not (tmp_path / ".." / "escaped-run").exists() and not (tmp_path / "escaped-run").exists()


# ------------------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize("seed", [-1, 2**32, 2**64, 2**64 + 1, -(2**70)])
def test_seeds_outside_every_generators_range_are_refused_by_train(seed: int, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29, case 9: a negative seed, or one above 2**32 - 1 (scikit-learn's RandomState, the narrowest
    generator the run seed reaches), was a traceback after the data was loaded."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="seed"):
        resolve(overrides={"seed": seed})
    result = CliRunner().invoke(main, ["train", "--seed", str(seed), "--epochs", "1", "--train-limit", "100", "-q"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"error: invalid seed {seed}; use --seed between 0 and 4294967295"]
    assert not (tmp_path / "runs").exists()
    assert resolve(overrides={"seed": 2**32 - 1}).seed == 2**32 - 1


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_seeds_outside_the_range_are_refused_by_sample(seed: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sample", str(tmp_path / "run"), "-o", str(tmp_path / "g.png"),
                                       "--seed", seed])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: invalid seed {seed}; use --seed between 0 and 4294967295"], result.output
    assert not (tmp_path / "g.png").exists()


# ------------------------------------------------------------------------------------------ every number option
def _kind(f) -> str:  # noqa: ANN001 - a dataclass field
    return str(f.type).split(" | ")[0]


NUMBER_FIELDS = [f.name for f in fields(RunConfig) if _kind(f) in ("int", "float")]
NUMBERS = st.one_of(st.integers(-10**30, 10**30), st.floats(),
                    st.sampled_from([math.nan, math.inf, -math.inf, 0, -0.0, 1e308, 5e-324, 2**32, 2**64, True,
                                     10**5000, -10**5000]))


def test_every_number_option_states_its_valid_range() -> None:
    assert {"latent", "seed", "epochs", "lr", "threads", "max_minutes", "channels"} <= set(NUMBER_FIELDS)
    missing = [f.name for f in fields(RunConfig) if f.name in NUMBER_FIELDS and not f.metadata.get("valid")]
    assert not missing, f"number options without a valid range: {missing}"
    unbounded = [f.name for f in fields(RunConfig)
                 if _kind(f) == "int" and getattr(f.metadata["valid"], "hi", 0) is None]
    assert not unbounded, f"whole-number options without an upper bound (it reaches C code as int64): {unbounded}"


@FAST
@given(key=st.sampled_from(NUMBER_FIELDS), value=NUMBERS)
def test_validate_passes_or_raises_one_config_error_for_any_number(key: str, value: float) -> None:
    try:
        cfg = RunConfig(**{key: value}).validate()
    except ConfigError as err:
        message = one_line(err)
        assert key.replace("_", "-") in message or "VAE" in message or "validation split" in message, message
    else:
        got = getattr(cfg, key)
        assert isinstance(got, int | float) and not isinstance(got, bool) and math.isfinite(got)


@FAST
@given(key=st.sampled_from(NUMBER_FIELDS), data=st.data())
def test_train_refuses_an_invalid_number_in_one_line_before_reading_data(key: str, data: st.DataObject,
                                                                         tmp_path_factory: pytest.TempPathFactory,
                                                                         ) -> None:
    kind = _kind({f.name: f for f in fields(RunConfig)}[key])
    value = data.draw(st.integers(-10**40, 10**40) if kind == "int" else st.floats().map(float) | st.integers(
        -10**40, 10**40).map(float))  # what click passes on: an int, or a float
    try:
        resolve(overrides={key: value})
    except ConfigError as err:
        expected = f"error: {err}"
    else:
        assume(False)  # a valid value would train: not this test's business
    tmp = tmp_path_factory.mktemp("train")
    result = CliRunner().invoke(main, ["train", "--" + key.replace("_", "-"), repr(value), "--out", str(tmp / "out"),
                                       "--dataset", f"folder:{tmp / 'no-such-folder'}"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [expected]
    assert not (tmp / "out").exists()


@pytest.mark.parametrize("args, line", [
    (["study", "--jobs", "0"], "error: --jobs 0: use 1 to 256 worker processes"),
    (["study", "--threads", "-3"], "error: invalid threads -3; use --threads between 1 and 4096"),
    (["tune", "--epochs", "0"], "error: invalid epochs 0; use --epochs between 1 and 1000000"),
    (["tune", "--seed", "-1"], "error: invalid seed -1; use --seed between 0 and 4294967295")])
def test_the_other_commands_check_their_numbers_before_any_work(tmp_path: Path, args: list[str], line: str) -> None:
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [line], result.output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ the model vocabulary
def test_the_vocabulary_is_the_registry_and_the_configuration_reads_it() -> None:
    from aelab import config, vocabulary
    from aelab.models import ACTIVATIONS, LATENT_RANGE, MODELS, VAE, build_model, register
    from aelab.models import vae as vae_module

    assert set(MODELS) == set(vocabulary.MODEL_NAMES)  # every family registered is in the vocabulary, and back
    fields_ = {f.name: f for f in fields(RunConfig)}
    assert fields_["model"].metadata["choices"] is vocabulary.MODEL_NAMES
    assert fields_["activation"].metadata["choices"] is vocabulary.ACTIVATION_NAMES
    assert fields_["likelihood"].metadata["choices"] is vocabulary.LIKELIHOODS
    assert tuple(ACTIVATIONS) == vocabulary.ACTIVATION_NAMES and LATENT_RANGE is vocabulary.LATENT_RANGE
    assert vae_module.LIKELIHOODS is vocabulary.LIKELIHOODS
    for name in vocabulary.MODEL_NAMES:  # variational in the vocabulary <=> the family builds a VAE
        model = build_model(name, 2, width=0.25, shape=(1, 28, 28))
        assert isinstance(model, VAE) == (name in vocabulary.VAE_MODELS) == RunConfig(model=name).is_vae, name
    for copy in ("MODEL_NAMES", "VAE_MODELS", "LIKELIHOODS", "ACTIVATION_NAMES"):  # read, not repeated
        assert getattr(config, copy) is getattr(vocabulary, copy)
    with pytest.raises(ValueError, match="aelab.vocabulary.FAMILIES"):
        register("a-family-nobody-listed", "a test")
    with pytest.raises(ConfigError, match="latent size 1025 is out of range; use --latent between 1 and 1024"):
        build_model("dense", LATENT_RANGE[1] + 1)


def test_the_vocabulary_and_the_configuration_do_not_import_torch() -> None:
    code = ("import sys; import aelab.vocabulary, aelab.config; from aelab.cli import main; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
