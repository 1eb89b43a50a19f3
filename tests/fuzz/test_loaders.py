"""Hypothesis on the config, rule, profile, trap-definition and rule-test loaders.

Three sources of broken files: random YAML trees, structural mutations of the shipped files
(unknown keys, missing keys, values of the wrong type, nasty scalars: bad durations, bad
regexes, huge numbers, secrets that cannot be read) and text mutations (invalid UTF-8, tabs,
aliases, YAML bombs, deep nesting, truncation).  Whatever goes in, only ``ConfigError``
escapes, its message begins with the file (and line) it is about, and where a key is the
problem the message names that key.  Python's ``re`` warns (FutureWarning) about patterns
such as ``[[`` that may change meaning one day; that warning is not an error of the loader.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from alarmd import cli
from alarmd.app import load_profiles_for, load_rules
from alarmd.collector.profile import load_profiles
from alarmd.collector.trapdefs import TrapDefinitions
from alarmd.config import ConfigError, load, read_yaml
from alarmd.rules.compile import compile_docs
from tests.fuzz.summary import Summary, fuzz_settings

REPO = Path(__file__).resolve().parents[2]
Loader = Callable[[Path], object]
TRAPS_ON = "\ntraps: {enabled: true, listen: '127.0.0.1:0'}\n"


# --------------------------------------------------------------------------- the loaders


def startup(path: Path) -> object:
    """What ``alarmd run`` and ``check-config`` load before anything starts."""
    loaded = load(path, env={})
    load_profiles_for(loaded)
    rules = load_rules(loaded)
    if loaded.config.traps.enabled:
        TrapDefinitions.load_globs(loaded.config.traps.definitions, loaded.path.parent)
    return rules


def rules(path: Path) -> object:
    """``check-rules`` on one file."""
    return compile_docs([read_yaml(path)])


def profile(path: Path) -> object:
    """One device profile."""
    return load_profiles([path])


def trap_definitions(path: Path) -> object:
    """One trap definitions file."""
    return TrapDefinitions.load([path])


def rule_tests(path: Path) -> object:
    """``alarmd test-rules`` on one file, in process: a file it cannot use is a ConfigError, never a crash.

    Tests that run and fail (a mutated expectation) are an outcome, not an error.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["test-rules", str(path)])
    if err.getvalue():
        raise ConfigError(err.getvalue().removeprefix("FAIL "))
    assert code == 0 or "FAIL " in out.getvalue(), out.getvalue()
    return code


# Shipped file (relative to the copied tree) -> the loader that reads it.
SHIPPED: dict[str, Loader] = {
    "config/alarmd.yml": startup,
    "rules/transmission.yml": rules,
    "rules/data_anomaly.yml": rules,
    "config/profiles/cpe_router.yml": profile,
    "config/profiles/optical_transceiver.yml": profile,
    "config/profiles/protocol_converter.yml": profile,
    "config/traps/standard.yml": trap_definitions,
    "rules/tests/transmission_test.yml": rule_tests,
    "rules/tests/correlation_test.yml": rule_tests,
}
SINGLE_FILE: dict[str, Loader] = {
    "config": lambda path: load(path, env={}),
    "rules": rules,
    "profile": profile,
    "trap_definitions": trap_definitions,
    "rule_tests": rule_tests,
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped config and rules; each example changes one file and puts it back."""
    root = tmp_path_factory.mktemp("shipped")
    shutil.copytree(REPO / "config", root / "config")
    shutil.copytree(REPO / "rules", root / "rules")
    with (root / "config" / "alarmd.yml").open("a", encoding="utf-8") as config:
        config.write(TRAPS_ON)  # so that startup reads the trap definitions too
    return root


@contextlib.contextmanager
def replaced(path: Path, content: bytes) -> Iterator[Path]:
    """``path`` holds ``content`` for the duration, then its original bytes again."""
    original = path.read_bytes()
    path.write_bytes(content)
    try:
        yield path
    finally:
        path.write_bytes(original)


def outcome(loader: Loader, path: Path) -> ConfigError | None:
    """Load; None if it loads, the ConfigError if not.  Any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message="Possible ")
        try:
            loader(path)
        except ConfigError as exc:
            return exc
    return None


_LOCATION = re.compile(r"^(?P<file>/[^:\n]+?)(?::\d+)?: ")


def assert_names_a_file(error: ConfigError, within: Path, path: Path | None = None) -> str:
    """The message begins with the file the problem is in (under ``within``; ``path`` if given)."""
    message = str(error)
    assert message.strip(), "an empty error message"
    first = message.splitlines()[0]
    match = _LOCATION.match(first) or re.search(r"\(relative to (?P<file>/[^)]+)\)", first)
    assert match is not None, f"the message does not begin with a file: {message!r}"
    named = Path(match.group("file"))
    if path is not None:
        assert named == path, f"the message names {named}, not {path}: {message!r}"
    assert named.is_relative_to(within), f"the message names {named}, outside {within}: {message!r}"
    return message


def check(
    summary: Summary,
    target: str,
    kind: str,
    loader: Loader,
    path: Path,
    within: Path,
    *,
    key: str | None = None,
) -> ConfigError | None:
    """Load, count the example, and check what escaped and what the message names."""
    summary.example(target, kind)
    try:
        error = outcome(loader, path)
        if error is None:
            return None
        summary.refused(target)
        message = assert_names_a_file(error, within, path if loader is not startup else None)
        if key is not None:
            assert key in message, f"the message does not name the key {key!r}: {message!r}"
    except BaseException:
        summary.failed(target)
        raise
    return error


# --------------------------------------------------------------------------- random YAML trees

KNOWN_KEYS: list[str] = sorted(
    {
        *(
            key
            for name in SHIPPED
            for key in re.findall(r"^\s*-?\s*([a-z_]+):", (REPO / name).read_text(), re.MULTILINE)
        ),
        "groups",
        "rules",
        "traps",
        "tests",
        "tables",
        "scalars",
        "baseline",
        "resolve",
        "auto_clear",
        "keep_firing_for",
        "clear",
        "event",
    }
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["30s", "1h30m", "-5m", "5x", "", "1.3.6.1.2.1", 'x{a=~"("}', "interface_up > 1e999"]),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12), st.integers(-3, 3))
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=25,
)
documents = st.one_of(trees, st.dictionaries(st.sampled_from(KNOWN_KEYS), trees, min_size=1, max_size=6))


@fuzz_settings(300)
@given(kind=st.sampled_from(sorted(SINGLE_FILE)), document=documents)
def test_random_yaml_trees_raise_only_config_errors_that_name_the_file(
    tree: Path, fuzz_summary: Summary, kind: str, document: object
) -> None:
    path = tree / "random" / f"{kind}.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    check(fuzz_summary, "loaders.random_trees", kind, SINGLE_FILE[kind], path, tree)


# --------------------------------------------------------------------------- structural mutations

Path_ = tuple[str | int, ...]


def nodes(data: object, at: Path_ = ()) -> Iterator[tuple[Path_, object]]:
    """Every node of a YAML document with its path, the root first."""
    yield at, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from nodes(value, (*at, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from nodes(value, (*at, i))


def parent_of(data: Any, at: Path_) -> Any:
    for seg in at[:-1]:
        data = data[seg]
    return data


def last_key(at: Path_) -> str | None:
    """The innermost mapping key on a path (a list item is named by the key of its list)."""
    return next((str(seg) for seg in reversed(at) if isinstance(seg, str)), None)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


WRONG_TYPES: tuple[object, ...] = (
    12345,
    -1,
    2.5,
    10**40,
    True,
    "a string",
    [],
    ["a", "b"],
    {},
    {"k": "v"},
)
NASTY: tuple[object, ...] = (
    "",
    " ",
    "\t",
    "5x",
    "-1s",
    "1h-",
    "1.5.5s",
    "ms",
    "99999999999999999999999999w",
    "1e999",
    float("inf"),
    float("-inf"),
    float("nan"),
    10**100,
    -(10**100),
    2**63,
    "x" * 5000,
    "光纤收发器",
    "line\nbreak",
    "\x1b[31m",
    '{a=~"("}',
    'x{a=~"a{99999999999}"} > 1',
    'x{a=~"' + "(" * 400 + ")" * 400 + '"} > 1',
    'x{a=~"[[:alpha:]"} > 1',
    "x > ",
    "x >> 1",
    "${ALARMD_FUZZ_UNSET_VARIABLE}",
    "${file:/nonexistent/alarmd-fuzz-secret}",
    "${file:/}",
    "${file:/proc/self/exe}",
    "1.3.6.1.99999999999999999999",
    ".1.3.",
    "0x",
    "::1:99999",
    "127.0.0.1:0",
    "300.1.1.1",
    "0.0.0.0/33",
)


@st.composite
def mutation(draw: st.DrawFn, original: Any) -> tuple[str, Any, str | None]:
    """(what was done, the mutated document, the key the error must name if it fails)."""
    data = copy.deepcopy(original)
    everything = list(nodes(data))
    mappings = [(at, node) for at, node in everything if isinstance(node, dict)]
    kind = draw(
        st.sampled_from(["unknown_key", "missing_key", "wrong_type", "nasty_value", "duplicate_item"])
    )
    if kind == "unknown_key":
        at, node = draw(st.sampled_from(mappings))
        key = draw(st.sampled_from(["zz_unknown", "Name", "for_", "labelz", "阈值", "by"]))
        node[key] = "x"
        return f"{kind} {key!r} at {at}", data, key
    if kind == "missing_key":
        at, node = draw(st.sampled_from([(a, n) for a, n in mappings if n]))
        key = draw(st.sampled_from(sorted(node, key=str)))
        del node[key]
        return f"{kind} {key!r} at {at}", data, None
    if kind == "duplicate_item":
        lists = [(at, node) for at, node in everything if isinstance(node, list) and node]
        if not lists:
            return "nothing", data, None
        at, node = draw(st.sampled_from(lists))
        node.append(copy.deepcopy(draw(st.sampled_from(node))))
        return f"{kind} at {at}", data, None
    at, node = draw(st.sampled_from(everything[1:]))
    if kind == "wrong_type":
        value = draw(st.sampled_from([v for v in WRONG_TYPES if _kind(v) != _kind(node)]))
    else:
        value = draw(st.sampled_from(NASTY))
    parent_of(data, at)[at[-1]] = value
    return f"{kind} {value!r} at {at}", data, last_key(at) if kind == "wrong_type" else None


def _dump(document: object) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=200).encode()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_file_loads(tree: Path, name: str) -> None:
    assert outcome(SHIPPED[name], tree / name) is None
    # the mutation tests start from the shipped data dumped again; that must load too
    with replaced(tree / name, _dump(yaml.safe_load((tree / name).read_text()))) as path:
        assert outcome(SHIPPED[name], path) is None


@fuzz_settings(300)
@given(data=st.data())
def test_mutated_shipped_files_raise_only_config_errors_that_name_file_and_key(
    tree: Path, fuzz_summary: Summary, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(SHIPPED)), label="file")
    original = yaml.safe_load((tree / name).read_text())
    what, document, key = data.draw(mutation(original), label="mutation")
    with replaced(tree / name, _dump(document)) as path:
        kind = what.split()[0]
        check(fuzz_summary, "loaders.mutated_shipped_files", kind, SHIPPED[name], path, tree, key=key)


# --------------------------------------------------------------------------- text mutations

BOMB = "".join(
    f"{a}: &{a} [" + ", ".join([f"*{b}"] * 9) + "]\n" for a, b in zip("bcdefghij", "abcdefghi", strict=True)
)
INSERTS: tuple[bytes, ...] = (
    b"\t",
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",  # a UTF-16 surrogate, encoded as UTF-8: not valid UTF-8
    b"\x00",
    b"\xef\xbb\xbf",
    b"\r\n",
    b"&a ",
    b"*a ",
    b"*zz",
    b"<<: *a\n",
    b"!!python/object/apply:os.system ['true'] ",
    b"!!binary ",
    b"!!set ",
    b"? [a, b]\n: c\n",
    b"---\n",
    b"...\n",
    b"%YAML 1.1\n",
    b"{",
    b"[",
    b"'",
    b'"',
    b": ",
    b"- ",
    b"|",
    b"x: &a [*a]\n",
    b"[" * 600 + b"]" * 600,
    b"{a: " * 300 + b"1" + b"}" * 300,
    b"a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB.encode(),
    b"1e400",
    b"99999999999999999999999999999999999999",
    b".nan",
    b"${ALARMD_FUZZ_UNSET_VARIABLE}",
)


@fuzz_settings(400)
@given(data=st.data())
def test_text_mutations_raise_only_config_errors_that_name_the_file(
    tree: Path, fuzz_summary: Summary, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(SHIPPED)), label="file")
    text = (tree / name).read_bytes()
    how = data.draw(st.sampled_from(["insert", "insert", "tabs", "truncate", "bomb_value"]), label="how")
    if how == "insert":
        pos = data.draw(st.integers(0, len(text)), label="at")
        text = text[:pos] + data.draw(st.sampled_from(INSERTS), label="insert") + text[pos:]
    elif how == "tabs":
        lines = text.split(b"\n")
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        lines[i] = re.sub(rb"^( +)", lambda m: b"\t" * max(1, len(m.group(1)) // 2), lines[i])
        text = b"\n".join(lines)
    elif how == "truncate":
        text = text[: data.draw(st.integers(0, len(text)), label="at")]
    else:
        # an alias of a billion-laughs anchor as the value of some key
        lines = text.split(b"\n")
        candidates = [i for i, line in enumerate(lines) if re.match(rb"^\s*-?\s*[a-z_]+: \S", line)]
        i = data.draw(st.sampled_from(candidates), label="line")
        lines[i] = re.sub(rb": \S.*$", b": *j", lines[i])
        text = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB.encode() + b"\n".join(lines)
    with replaced(tree / name, text) as path:
        check(fuzz_summary, "loaders.text_mutations", how, SHIPPED[name], path, tree)


# --------------------------------------------------------------------------- regressions


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"groups:\n  - name: \xff\n", r"rules.yml:2: not UTF-8 text \(invalid start byte at byte 18\)"),
        (b"? [a, b]\n: c\n", r"rules.yml:1: invalid YAML: found unhashable key"),
        (
            b"groups:\n  - name: \x00\n",
            r"rules.yml:2: invalid YAML: special characters are not allowed \(#x0000\)",
        ),
        (b"[" * 600 + b"]" * 600, r"rules.yml: invalid YAML: nested too deeply"),
        (b"groups: &g [*g]\n", r"rules.yml:1: invalid YAML: an anchor \(&\) is used inside itself"),
        (
            b"groups: [{name: g, rules: [{alert: A, expr: 'x{a=~\""
            + b"(" * 2000
            + b")" * 2000
            + b"\"} > 1'}]}]\n",
            r"rules.yml:1: rule A: bad regular expression .*recursion",
        ),
    ],
    ids=["invalid-utf8", "list-as-key", "nul", "deep-nesting", "alias-inside-itself", "deep-regex"],
)
def test_rule_files_that_used_to_crash_the_loader(tmp_path: Path, text: bytes, message: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=message):
        compile_docs([read_yaml(path)])


def test_a_billion_laughs_is_read_in_linear_time(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB + "groups: *j\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"rules.yml: invalid YAML: aliases \(\*\) expand to more than 100000"
    ):
        compile_docs([read_yaml(path)])  # 9**9 leaves once expanded: walking or printing them would not end


def test_a_matcher_regex_python_cannot_build_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "alarmd.yml"
    path.write_text(
        "routing:\n  route:\n    receiver: service_support\n    routes:\n"
        "      - {receiver: transport_network, matchers: ['device=~\"r{4294967296}\"']}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"alarmd.yml:5: routing.route.routes.0.matchers: .*repetition"):
        load(path, env={})


def test_a_profile_with_an_unbuildable_sensor_regex_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.yml"
    path.write_text(
        "tables:\n  - name: sensors\n    kind: entity_sensor\n    columns:\n"
        + "".join(
            f"      - {{name: {c}, oid: 1.3.6.1.2.1.99.1.1.1.{i}}}\n"
            for i, c in enumerate(["sensor_type", "sensor_scale", "sensor_precision", "sensor_value"], 1)
        )
        + "    sensor_metrics:\n      rx: {sensor_type: dBm, name_pattern: 'a{4294967296}'}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ConfigError, match=r"odd.yml:\d+: tables.0.sensor_metrics.rx.name_pattern: .*too large"
    ):
        load_profiles([path])


def test_a_secret_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "community.bin").write_bytes(b"\xff\xfe\x00")
    path = tmp_path / "alarmd.yml"
    path.write_text("credentials:\n  c:\n    community: ${file:community.bin}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"alarmd.yml:3: secret file .*community.bin is not UTF-8 text"):
        load(path, env={})


# --------------------------------------------------------------------------- the commands


def _alarmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alarmd", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_commands_on_broken_files_exit_non_zero_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "rules", tmp_path / "rules")
    config = tmp_path / "config" / "alarmd.yml"
    rule_file = tmp_path / "rules" / "transmission.yml"

    rule_file.write_bytes(rule_file.read_bytes().replace(b"auto_clear: 24h", b"auto_clear: 24x"))
    checked = _alarmd("check-rules", str(rule_file))
    assert checked.returncode == 1
    assert "Traceback" not in checked.stderr
    assert re.search(
        rf"{re.escape(str(rule_file))}:\d+: groups.0.rules.0.auto_clear: '24x' is not a duration",
        checked.stderr,
    )

    rule_file.write_bytes(b"groups:\n  - name: \xff\n")
    started = _alarmd("run", "-c", str(config.parent))
    assert started.returncode == cli.EX_CONFIG
    assert "Traceback" not in started.stderr
    assert re.search(r"/rules/transmission.yml:2: not UTF-8 text", started.stderr)

    shutil.copy(REPO / "rules" / "transmission.yml", rule_file)
    config.write_text(config.read_text() + TRAPS_ON, encoding="utf-8")
    traps = tmp_path / "config" / "traps" / "standard.yml"
    traps.write_text("traps:\n  - name: linkDown\n    oid: IF-MIB::linkDown\n", encoding="utf-8")
    started = _alarmd("run", "-c", str(config.parent))
    assert started.returncode == cli.EX_CONFIG
    assert "Traceback" not in started.stderr
    assert f"{traps}:3: traps.0.oid: 'IF-MIB::linkDown' is not a numeric OID" in started.stderr

    shutil.copy(REPO / "config" / "traps" / "standard.yml", traps)
    config.write_text(config.read_text() + "kafka_typo: {}\n", encoding="utf-8")
    checked = _alarmd("check-config", "-c", str(config.parent))
    assert checked.returncode == 1
    assert "Traceback" not in checked.stderr
    assert re.search(rf"{re.escape(str(config))}:\d+: unknown key 'kafka_typo'", checked.stderr)
