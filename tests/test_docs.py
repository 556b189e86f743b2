"""Every code block of README.md and docs/*.md works as written; a failure names the block's file and line.

- ```python: run in a subprocess, in a fresh temporary folder, with the sample dataset the blocks ask for
  (``ensure_sample_data()``) made small and pointed to by ``$DALI_MIXUP_DATA``. Tracebacks carry the document's
  own line numbers.
- ```bash: a block whose commands are all quick (``dali-mixup make-sample-data``, ``demo``, ``train ...
  --train-batches-per-epoch N``) runs for real, in a fresh temporary folder, as a user runs it. Every other command is checked
  without running it: each ``dali-mixup`` command line (also after ``torchrun ... -m dali_mixup`` or
  ``python -m dali_mixup``) is parsed by the CLI's own parser (every subcommand and flag exists, every value is
  accepted, no deprecated spelling), the extras of ``pip install -e ".[...]"`` exist, scripts named by path
  exist, and the test command of the quick start is .ci/run's, character for character. The command lines of
  the upstream scripts the recipes patch (``python train.py ...``) are theirs and are not checked here.
- ```diff: the recipes; tests/test_recipes.py runs their added lines in loops shaped like timm's and
  torchvision's. Here: each is a marked recipe that test reads, and its added lines compile.
- ```text: output or plain text, not run. A fence without one of these kinds is an error.

Command lines quoted in the prose (`dali-mixup ...` code spans) are parsed too, or, for a synopsis with
placeholders, have their flags checked; relative links between the documents must resolve.
"""

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = ("python", "bash", "diff", "text")
RECIPES = ("timm", "torchvision")  # the <!-- recipe: NAME --> diffs tests/test_recipes.py runs
QUICK = ("make-sample-data", "demo")  # dali-mixup subcommands that finish in seconds on tiny data


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    kind: str
    code: str
    before: str  # the line above the fence

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks():
    found = []
    for path in DOCS:
        lines = path.read_text().split("\n")
        i = 0
        while i < len(lines):
            opening = re.match(r"^```(.*)$", lines[i])
            if opening:
                end = i + 1
                while end < len(lines) and lines[end] != "```":
                    end += 1
                assert end < len(lines), f"{path.relative_to(ROOT)}:{i + 1}: code block never closed"
                found.append(Block(path, i + 1, opening.group(1).strip(), "\n".join(lines[i + 1:end]) + "\n",
                                   lines[i - 1] if i else ""))
                i = end
            i += 1
    return found


BLOCKS = _blocks()


def _of(kind):
    blocks = [b for b in BLOCKS if b.kind == kind]
    return pytest.mark.parametrize("block", blocks, ids=[b.where for b in blocks])


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    """The sample dataset, small: 8 classes, 4 training and 2 validation images each."""
    from dali_mixup.sample_data import make_sample_data
    return make_sample_data(tmp_path_factory.mktemp("docs-data") / "sample-data", train_per_class=4,
                            val_per_class=2)


@pytest.fixture(scope="module")
def env(sample_dir, tmp_path_factory):
    """What a user's shell has: this checkout importable, `dali-mixup` on the PATH, the sample data found."""
    bin_dir = tmp_path_factory.mktemp("docs-bin")
    (bin_dir / "dali-mixup").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m dali_mixup "$@"\n')
    (bin_dir / "dali-mixup").chmod(0o755)
    return dict(os.environ, DALI_MIXUP_DATA=str(sample_dir), OMP_NUM_THREADS="1", MPLBACKEND="Agg",
                PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
                PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


def _fail(block, what, proc=None):
    tail = "" if proc is None else "\n" + (proc.stdout + proc.stderr)[-4000:]
    pytest.fail(f"{block.where}: {block.kind} block {what}{tail}", pytrace=False)


# -- every block has a kind ---------------------------------------------------------------------------------------
def test_every_block_says_what_it_is():
    wrong = [f"{b.where}: ```{b.kind}" for b in BLOCKS if b.kind not in KINDS]
    assert not wrong, f"fence each block as one of {KINDS} (```text for output and plain text): {wrong}"


# -- python -------------------------------------------------------------------------------------------------------
@_of("python")
def test_python_block_runs(block, env, tmp_path):
    script = tmp_path / f"doc_{block.path.stem.replace('-', '_')}_line{block.line}.py"
    script.write_text("\n" * block.line + block.code)  # line numbers in a traceback are the document's
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        _fail(block, f"failed (exit {proc.returncode}); traceback lines are {block.path.name}'s", proc)


# -- diff ---------------------------------------------------------------------------------------------------------
@_of("diff")
def test_diff_block_is_a_recipe_the_recipe_tests_run(block):
    marker = re.fullmatch(r"<!-- recipe: (\w+) -->", block.before)
    if not marker or marker.group(1) not in RECIPES or block.path.name != "recipes.md":
        _fail(block, f"is not one of docs/recipes.md's <!-- recipe: NAME --> diffs ({RECIPES}) that "
                     "tests/test_recipes.py runs")
    added = [line[1:].strip() for line in block.code.splitlines() if line.startswith("+") and not
             line.startswith("+++")]
    compile("\n".join(added), block.where, "exec")
    _check_hunk_counts(block)


def _check_hunk_counts(block):
    """A hunk with line numbers (``@@ -a,n +b,m @@``) has n old and m new lines, or ``patch`` refuses the diff."""
    hunks = re.split(r"^(@@ .* @@.*)$", block.code, flags=re.M)
    for header, body in zip(hunks[1::2], hunks[2::2]):
        counts = re.fullmatch(r"@@ -\d+,(\d+) \+\d+,(\d+) @@.*", header)
        if not counts:
            continue  # "@@ def main(args): @@": placed by its context, not its numbers
        lines = [line for line in body.splitlines() if line and line[0] in " +-"]
        old = sum(line[0] in " -" for line in lines)
        new = sum(line[0] in " +" for line in lines)
        if (old, new) != (int(counts.group(1)), int(counts.group(2))):
            _fail(block, f"hunk {header!r} holds {old} old and {new} new lines: patch would refuse it")


def test_both_recipes_are_there():
    names = [re.fullmatch(r"<!-- recipe: (\w+) -->", b.before).group(1) for b in BLOCKS if b.kind == "diff"]
    assert sorted(names) == sorted(RECIPES)


# -- bash ---------------------------------------------------------------------------------------------------------
def _commands(block):
    """The block's command lines: continuations joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", block.code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _words(command):
    """shell words; a $(...) substitution stands for one word, and `...` ("the rest as above") is left out."""
    return [w for w in shlex.split(re.sub(r"\$\([^)]*\)", "X", command)) if w != "..."]


def _cli():
    try:
        from dali_mixup.apps import cli
    except ImportError:
        from dali_mixup import cli
    return cli


def _dali_mixup_args(words):
    """The words after `dali-mixup` (or `-m dali_mixup` of python or torchrun) in a command; None when the command
    does not run dali-mixup."""
    if Path(words[0]).name == "dali-mixup":
        return words[1:]
    runner = Path(words[0]).name in ("torchrun", "python", "python3")
    if runner and "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1] == "dali_mixup":
        return words[words.index("-m") + 2:]
    return None


def _is_quick(words):
    args = _dali_mixup_args(words)
    return args is not None and bool(args) and (args[0] in QUICK or (args[0] == "train" and "--train-batches-per-epoch" in args))


def _check_parses(block, args):
    """The CLI's own parser takes the command line, with no warning of a deprecated spelling."""
    cli, err = _cli(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            cli.parse_args(list(args))
        except SystemExit as exc:
            _fail(block, f"has a command line the CLI refuses (exit {exc.code}): dali-mixup {shlex.join(args)}\n"
                         f"{err.getvalue()[-2000:]}")
    said = err.getvalue() + "\n".join(str(w.message) for w in caught)
    if re.search(r"deprecat", said, flags=re.I):
        _fail(block, f"uses a deprecated spelling: dali-mixup {shlex.join(args)}\n{said[-2000:]}")


def _extras():
    """The extras pyproject.toml declares (its [project.optional-dependencies] table; no TOML parser needed)."""
    text = (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1]
    return set(re.findall(r"^([\w-]+)\s*=", text.split("\n[", 1)[0], flags=re.M))


def _ci_command():
    lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    return lines[-1]


def _check_command(block, command):
    if command == _ci_command():
        return
    for part in (p.strip() for p in command.split("&&")):
        words = _words(part)
        args = _dali_mixup_args(words)
        if args is not None:
            _check_parses(block, args)
        elif words[:3] == ["python3", "-m", "venv"]:
            pass
        elif Path(words[0]).name == "pip" and words[1:3] == ["install", "-e"]:
            extras = re.fullmatch(r"\.(?:\[([\w,]+)\])?", words[3])
            assert extras, f"{block.where}: pip install -e of {words[3]!r}, not this checkout"
            unknown = set(extras.group(1).split(",") if extras.group(1) else ()) - _extras()
            assert not unknown, f"{block.where}: no such extra in pyproject.toml: {sorted(unknown)}"
        elif words[0] in ("python", "python3") and words[1:3] == ["-m", "pytest"]:
            paths = [w for w in words[3:] if not w.startswith("-")][:1]  # the folder tested, when named first
            assert all((ROOT / p).exists() for p in paths), f"{block.where}: no such test folder {paths}"
        elif words[0] in ("python", "python3", "torchrun") and "train.py" in words:
            pass  # timm's / torchvision's own script (the recipes): its flags are the script's
        elif words[0] in ("python", "python3") and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), f"{block.where}: no such script {words[1]}"
        else:
            _fail(block, f"has a command this test does not know how to check: {part}")


@_of("bash")
def test_bash_block(block, env, tmp_path):
    commands = _commands(block)
    assert commands, f"{block.where}: an empty bash block"
    for command in commands:
        _check_command(block, command)
    if all(_is_quick(_words(c)) for c in commands):  # quick: run it for real, as a user does
        proc = subprocess.run(["bash", "-e", "-c", block.code], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0:
            _fail(block, f"failed when run (exit {proc.returncode})", proc)


def _inline_commands():
    """(file, command) for each `dali-mixup ...` code span in the prose (outside code blocks), line breaks joined."""
    found = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for span in re.findall(r"`((?:dali-mixup|python -m dali_mixup)\s[^`]*)`", text):
            found.append((path.relative_to(ROOT), " ".join(span.split())))
    return found


def test_inline_command_lines_parse():
    """Command lines quoted in the prose: a concrete one is parsed as a block's is; a synopsis (placeholders in
    capitals, [optional] parts, "…") has each of its flags checked against its subcommand's parser."""
    cli = _cli()
    subcommands = cli.build_parser().subcommands
    for path, command in _inline_commands():
        words = command.replace("python -m dali_mixup", "dali-mixup").split()[1:]
        if words[0] not in subcommands:
            assert words[0].isupper(), f"{path}: `{command}`: no subcommand {words[0]!r}"  # COMMAND
            continue
        synopsis = any(w.isupper() or w.startswith("<") or set(w) & set("[]|…") or w == "..." for w in words[1:])
        if not synopsis:
            _check_parses(Block(ROOT / path, 0, "inline", command, ""), words)
            continue
        flags = [w.strip("[]") for w in words[1:] if w.strip("[").startswith("-")]
        unknown = [f for f in flags if f not in subcommands[words[0]]._option_string_actions]
        assert not unknown, f"{path}: `{command}`: {words[0]} has no {unknown}"


def test_quick_start_tests_as_ci_does():
    """The README's test command is .ci/run's, character for character."""
    readme = [c for b in BLOCKS if b.path.name == "README.md" and b.kind == "bash" for c in _commands(b)]
    assert _ci_command() in readme, (_ci_command(), readme)


def test_some_bash_blocks_run_for_real():
    quick = [b.where for b in BLOCKS if b.kind == "bash" and all(_is_quick(_words(c)) for c in _commands(b))]
    assert quick


# -- the README's size and the links between the documents ------------------------------------------------------
def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def _anchors(path):
    """The anchors GitHub gives the headings of a Markdown file: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_relative_links_resolve():
    broken = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file, _, anchor = target.partition("#")
            if not (path.parent / file).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and file.endswith(".md") and anchor not in _anchors(path.parent / file):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_readme_results_are_the_figures_of_the_file_it_names():
    """Each row of the README's results table is the rounded figures of the benchmark JSON it names."""
    import json
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    source = re.search(r"--json\s+(benchmarks/results/\S+\.json)`", section).group(1)
    results = json.loads((ROOT / source).read_text())["results"]
    rows = [r for r in section.splitlines() if r.startswith("| ") and not r.startswith("| configuration")]
    assert len(rows) == len(results)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        r = results[cells[0].split()[0]]
        ratio = f"{r['ours_over_this']:.2f}×"
        if cells[0].split()[0] != "fused":
            ratio += f" ({r['ours_over_this_paired_min']:.2f}–{r['ours_over_this_paired_max']:.2f})"
        expected = [f"{r['img_per_s_median']:,.0f}", f"{r['img_per_s_min']:,.0f} – {r['img_per_s_max']:,.0f}", ratio,
                    f"{r['cpu_ms_per_batch']:.0f} ms"]
        assert cells[1:] == expected, (cells[0], cells[1:], expected)


def test_readme_indexes_every_document():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in DOCS[1:] if f"](docs/{p.name})" not in readme]
    assert not missing, f"README.md's documentation index lacks {missing}"
