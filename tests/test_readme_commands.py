"""The README is a guide that works as written.

Every shell command in the README's fenced ```bash blocks is extracted. A `cervicontour ...` line (or a
`torchrun ... -m cervicontour.cli ...` line) must name a real subcommand, every long option it uses must be
listed by that subcommand's `--help`, and the whole line must parse (click builds the context: options,
types, required arguments) without running anything. A `make` line must name a Makefile target. Plus: the
README stays a guide (at most 250 lines) and every link it has into docs/ (and every link between docs
pages) resolves, anchors included.

The one test that actually runs the README's commands is marked slow.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cervicontour.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250

@dataclass(frozen=True)
class Command:
    line: int  # 1-based line in README.md where the command starts
    text: str  # as written (continuations joined)
    tokens: tuple[str, ...]  # shell words, comments dropped

    @property
    def id(self) -> str:
        return f"L{self.line}: {self.text[:70]}"


def bash_commands(text: str) -> list[Command]:
    """Shell commands of the ```bash blocks of ``text``: continuations joined, comments dropped, split on ; && || |."""
    commands, in_bash, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_bash = not in_bash and stripped[3:].strip() == "bash"
            continue
        if not in_bash or (not pending and (not stripped or stripped.startswith("#"))):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole, pending = pending + stripped, ""
        lexer = shlex.shlex(whole, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|"):
                if words:
                    commands.append(Command(start, whole.split("#")[0].strip(), tuple(words)))
                words = []
            else:
                words.append(token)
    return commands


README_COMMANDS = bash_commands(README.read_text())
ROOT_COMMAND = typer.main.get_command(app)
#: click's UsageError as typer ships it (typer vendors click; BadParameter derives from it)
USAGE_ERROR = next(k for k in typer.BadParameter.__mro__ if k.__name__ == "UsageError")


def cli_args(command: Command) -> list[str] | None:
    """The arguments after `cervicontour` (or after torchrun's `-m cervicontour.cli`); None for other programs."""
    words = list(command.tokens)
    program = Path(words[0]).name
    if program == "cervicontour":
        return words[1:]
    if program == "torchrun":
        assert "-m" in words, f"{command.id}: torchrun without -m cervicontour.cli"
        module = words[words.index("-m") + 1]
        assert module == "cervicontour.cli", f"{command.id}: torchrun runs {module}, not cervicontour.cli"
        return words[words.index("-m") + 2 :]
    return None


def resolve(args: list[str]) -> tuple[list[str], object, list[str]]:
    """(subcommand path, its click command, the remaining arguments) for a cervicontour argument list."""
    path, command, rest = [], ROOT_COMMAND, list(args)
    while hasattr(command, "commands"):  # a group: descend into the named subcommand
        if not rest or rest[0] not in command.commands:
            known = ", ".join(sorted(command.commands))
            name = rest[0] if rest else "(none)"
            raise LookupError(f"`{' '.join(['cervicontour', *path])}` has no subcommand {name!r} (it has: {known})")
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return path, command, rest


def long_options(args: list[str]) -> list[str]:
    options = []
    for word in args:
        if word == "--":
            break
        if word.startswith("--") and len(word) > 2:
            options.append(word.split("=", 1)[0])
    return options


def resolve_readme(command: Command):
    """:func:`resolve` for a README command, failing with the README line it is on."""
    try:
        return resolve(cli_args(command))
    except LookupError as exc:
        raise AssertionError(f"README line {command.line}: {exc}") from None


CLI_COMMANDS = [c for c in README_COMMANDS if cli_args(c) is not None]
MAKE_COMMANDS = [c for c in README_COMMANDS if Path(c.tokens[0]).name == "make"]


def test_the_readme_has_commands_to_check():
    programs = {Path(c.tokens[0]).name for c in README_COMMANDS}
    assert {"cervicontour", "make", "torchrun"} <= programs, programs
    assert len(CLI_COMMANDS) >= 15
    assert all(Path(c.tokens[0]).name in {"cervicontour", "make", "torchrun"} for c in README_COMMANDS), (
        "a README command this test does not know how to check: "
        + "; ".join(c.id for c in README_COMMANDS if Path(c.tokens[0]).name not in {"cervicontour", "make", "torchrun"})
    )


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: c.id)
def test_cli_command_exists_and_its_options_are_in_its_help(command):
    path, click_command, rest = resolve_readme(command)
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=250, env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    declared = {o for p in click_command.params for o in (*p.opts, *p.secondary_opts)}
    for option in long_options(rest):
        assert option in declared, (
            f"README line {command.line}: `cervicontour {' '.join(path)}` has no option {option} "
            f"(it has: {', '.join(sorted(o for o in declared if o.startswith('--')))})"
        )
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.output), (
            f"README line {command.line}: `cervicontour {' '.join(path)} --help` does not list {option}"
        )


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: c.id)
def test_cli_command_parses_as_written(command):
    """click parses the whole line (arguments, options, their types, required ones) and runs nothing."""
    path, click_command, rest = resolve_readme(command)
    try:
        context = click_command.make_context(" ".join(["cervicontour", *path]), list(rest))
    except USAGE_ERROR as exc:
        raise AssertionError(f"README line {command.line}: {command.text}\n  does not parse: {exc.format_message()}") from None
    context.close()


@pytest.mark.parametrize("command", MAKE_COMMANDS, ids=lambda c: c.id)
def test_make_targets_exist(command):
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile, flags=re.M))
    for target in (w for w in command.tokens[1:] if not w.startswith("-") and "=" not in w):
        assert target in targets, f"README line {command.line}: the Makefile has no target {target!r} (it has: {sorted(targets)})"


def test_torchrun_runs_the_cli_module():
    """`torchrun -m cervicontour.cli` needs the module to run the app when executed as __main__."""
    source = (ROOT / "src" / "cervicontour" / "cli" / "__main__.py").read_text()
    assert 'if __name__ == "__main__"' in source
    assert any(Path(c.tokens[0]).name == "torchrun" for c in CLI_COMMANDS)


def test_readme_is_a_guide_not_a_notebook():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES} (move detail to docs/)"


# --- links -------------------------------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, fenced, seen = set(), False, {}
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*)", line)):
            slug = _slug(m.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def local_links(path: Path) -> list[tuple[str, Path, str]]:
    """(link as written, target file, anchor) for each relative link of a Markdown file, code blocks excluded."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        out.append((target, (path.parent / file_part).resolve() if file_part else path, anchor))
    return out


def test_every_docs_link_in_the_readme_resolves():
    links = local_links(README)
    docs_links = [link for link in links if link[0].startswith("docs/")]
    assert len(docs_links) >= 15, "the README should link its docs/ pages"
    for written, target, anchor in links:
        assert target.exists(), f"README links {written}, which does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"README links {written}: no heading with anchor #{anchor} in {target.name}"


def test_every_docs_page_is_reachable_from_the_readme():
    """A page is linked from the README or from a docs page the README links: none is orphaned."""
    from_readme = {target for _, target, _ in local_links(README) if target.parent == DOCS.resolve()}
    reachable = set(from_readme)
    for page in from_readme:
        reachable |= {target for _, target, _ in local_links(page) if target.parent == DOCS.resolve()}
    orphans = sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in reachable)
    assert not orphans, f"docs pages linked from nowhere: {orphans}; add them to the README's Documentation table or link them from a docs page"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_link_of_a_docs_page_resolves(page):
    for written, target, anchor in local_links(page):
        assert target.exists(), f"{page.name} links {written}, which does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page.name} links {written}: no heading with anchor #{anchor} in {target.name}"


# --- the README's day, run as written (slow) -----------------------------------------------------------------

#: The caps the fit tests use, so the day's `fit` ends in minutes whatever its budget says.
TINY_FIT_TOML = "max_stage1_steps = 3\nmax_refiner_steps = 3\nfolds = 3\nthreads = 1\n"


def _runnable(command: Command) -> bool:
    """Runs as written: a cervicontour command without placeholders (CAPITALS) that ends by itself."""
    args = cli_args(command)
    if args is None or Path(command.tokens[0]).name != "cervicontour" or not args:
        return False
    if args[0] == "review":
        return False  # `review` serves until stopped: its --help and parsing are checked above
    return not any(re.fullmatch(r"[A-Z][A-Z_]+", part) for word in args for part in re.split(r"[/=]", word))


def _the_day() -> tuple[list[Command], int]:
    text = README.read_text()
    start = text.index("## The hospital's day")
    end = text.index("\n## ", start + 1)
    lines_before = text[:start].count("\n")
    return [c for c in bash_commands(text[start:end]) if _runnable(c)], lines_before


@pytest.mark.slow  # minutes: synthesises 26 small patients, fits (3 + 3 steps), predicts and evaluates
def test_the_hospitals_day_runs_as_written(tmp_path):
    day, offset = _the_day()
    assert [cli_args(c)[0] for c in day][:4] == ["synth", "validate", "clean", "fit"]
    (tmp_path / "tiny_fit.toml").write_text(TINY_FIT_TOML)
    script = Path(sys.executable).with_name("cervicontour")
    for command in day:
        args = cli_args(command)
        if args[0] == "fit":
            args = [*args, "--config", "tiny_fit.toml"]  # a tiny budget: the steps are capped
        result = subprocess.run([str(script), *args], cwd=tmp_path, capture_output=True, text=True)
        # validate exits 1 when it finds errors; the stand-in phantom cohort has none
        assert result.returncode == 0, f"README line {command.line + offset}: {command.text}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert (tmp_path / "out" / "model" / "card.md").is_file()
    assert (tmp_path / "out" / "test_metrics.csv").is_file()
    assert (tmp_path / "out" / "drafts" / "SYN021" / "RS_final.dcm").is_file()
