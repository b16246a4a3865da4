"""Every `mrl ...` command written in README.md and docs/*.md parses.

Commands are collected from fenced code blocks (lines continued with a trailing backslash joined, shell comments
dropped) and from `inline code`. A command's path is its leading words up to the first one that is not a plain
lower-case word (an option, a path, `key=value`, `<placeholder>`, `$VAR`, a quoted string, `[--optional]`, ...);
`mrl <path> --help` must exit 0 through Typer's CliRunner, and every `--option` written after the path must appear in
that help. `mrl` inside a path or a name (mrl/cli, mrl-drift, mrl.funnel), as another command's argument
(`kubectl -n mrl`) or in prose is not a command. `--help` runs once per distinct path. A failure names the file, the
line and the command.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
COMMAND = re.compile(r"(?:^|(?<=[\s;&|(]))mrl(?=\s|$)")  # the word mrl, not mrl/cli, mrl-drift, mrl.x, x-mrl@y
PATH_WORD = re.compile(r"[a-z][a-z0-9-]*")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
SHELL_COMMENT = re.compile(r"(?:^|\s)#.*")
ENV_ASSIGNMENT = re.compile(r"(?:^|\s)[A-Z_][A-Z0-9_]*=\S*$")  # VAR=value just before the command
SEPARATOR = re.compile(r";|\s(?:&&|\|\||\|)\s")  # the next shell command starts here
HELP_ENV = {"COLUMNS": "250", "TERMINAL_WIDTH": "250", "NO_COLOR": "1"}  # no wrapped or truncated option names


@dataclass(frozen=True)
class Command:
    file: str
    line: int
    text: str
    path: tuple[str, ...]
    options: tuple[str, ...]

    def where(self) -> str:
        return f"{self.file}:{self.line}: `{self.text}`"


def parse(text: str, file: str, line: int) -> Command | None:
    """The command starting at `mrl` in text: its path (leading plain words) and the options written after it."""
    text = SEPARATOR.split(SHELL_COMMENT.sub("", text), maxsplit=1)[0].strip()
    words = text.split()[1:]
    path: list[str] = []
    for word in words:
        if not PATH_WORD.fullmatch(word):
            break
        path.append(word)
    rest = QUOTED.sub(" ", " ".join(words[len(path):]))
    options = tuple(dict.fromkeys(OPTION.findall(rest)))
    if not path and not options:  # `mrl` on its own: the project's name, not a command
        return None
    return Command(file, line, " ".join(text.split()), tuple(path), options)


def starts_a_command(before: str) -> bool:
    """Whether `mrl` after this text is a command's first word: at the start, after a shell separator, a prompt,
    environment assignments or a label ("search service: mrl serve ..."); not `kubectl -n mrl`, not prose."""
    before = before.rstrip()
    while m := ENV_ASSIGNMENT.search(before):
        before = before[:m.start()].rstrip()
    return not before or before.endswith(("&&", "||", ";", "|", "(", "`", "$", ":"))


def commands_in(text: str, file: str, line: int) -> list[Command]:
    found = (parse(text[m.start():], file, line) for m in COMMAND.finditer(text) if starts_a_command(text[:m.start()]))
    return [c for c in found if c is not None]


def _blocks(lines: list[str]) -> Iterable[tuple[bool, int, str]]:
    """(in a code block, first line number, text): code lines one by one (backslash continuations joined), prose
    one paragraph at a time (inline code may wrap onto the next line, never into the next paragraph)."""
    in_code, paragraph, start, pending = False, [], 0, None
    for number, raw in enumerate(lines, 1):
        if FENCE.match(raw):
            if paragraph:
                yield False, start, "\n".join(paragraph)
                paragraph = []
            in_code = not in_code
            continue
        if in_code:
            if pending is not None:
                pending = (pending[0], pending[1] + " " + raw.strip())
            else:
                pending = (number, raw)
            if pending[1].rstrip().endswith("\\"):
                pending = (pending[0], pending[1].rstrip()[:-1])
                continue
            yield True, pending[0], pending[1]
            pending = None
        elif raw.strip():
            if not paragraph:
                start = number
            paragraph.append(raw)
        elif paragraph:
            yield False, start, "\n".join(paragraph)
            paragraph = []
    if paragraph:
        yield False, start, "\n".join(paragraph)
    if pending is not None:
        yield True, pending[0], pending[1]


def collect(paths: Iterable[Path]) -> list[Command]:
    """Every `mrl ...` command in the markdown files, in order."""
    commands: list[Command] = []
    for path in paths:
        name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
        for code, start, text in _blocks(path.read_text(encoding="utf-8").splitlines()):
            if code:
                commands += commands_in(text, name, start)
                continue
            for span in INLINE_CODE.finditer(text):
                line = start + text.count("\n", 0, span.start())
                commands += commands_in(span.group(1).replace("\n", " "), name, line)
    return commands


def cli_help(path: tuple[str, ...]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from mrl.cli import app

    result = CliRunner().invoke(app, [*path, "--help"], env=HELP_ENV)
    return result.exit_code, result.output


def check(commands: Iterable[Command], help_of: Callable[[tuple[str, ...]], tuple[int, str]] = cli_help) -> list[str]:
    """One line per command that does not parse: an unknown command path, or an option its --help does not list."""
    commands = list(commands)
    helps = {path: help_of(path) for path in dict.fromkeys(c.path for c in commands)}
    failures = []
    for c in commands:
        exit_code, output = helps[c.path]
        shown = " ".join(("mrl", *c.path, "--help"))
        if exit_code != 0:
            lines = [text for text in (raw.strip(" │╭╮╰╯─") for raw in output.splitlines()) if text]
            last = lines[-1] if lines else "(no output)"
            failures.append(f"{c.where()}: `{shown}` exits {exit_code}: {last}")
            continue
        missing = [o for o in c.options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", output)]
        if missing:
            failures.append(f"{c.where()}: `{shown}` lists no {', '.join(missing)}")
    return failures


def test_every_mrl_command_in_the_readme_and_docs_parses():
    commands = collect(DOCS)
    paths = {c.path for c in commands}
    assert len(commands) > 50 and {("serve",), ("index", "promote"), ("model", "register"), ("pipeline", "run")} <= paths
    failures = check(commands)
    assert not failures, f"{len(failures)} of {len(commands)} documented commands do not parse:\n" + "\n".join(failures)


def test_a_made_up_command_or_option_is_reported(tmp_path):
    doc = tmp_path / "made-up.md"
    doc.write_text("Promote with `mrl index promotee --data ds.npz`.\n\n"
                   "```bash\n"
                   "mrl serve --reload-interval 30 \\\n"
                   "  --reload-intervall 30\n"
                   "mrl serve --reload-interval 30 --host 0.0.0.0\n"
                   "```\n")
    commands = collect([doc])
    assert [(c.line, c.path) for c in commands] == [(1, ("index", "promotee")), (4, ("serve",)), (6, ("serve",))]
    failures = check(commands)
    assert len(failures) == 2, failures
    assert failures[0].startswith("made-up.md:1: `mrl index promotee --data ds.npz`"), failures
    assert failures[1].startswith("made-up.md:4: `mrl serve --reload-interval 30 --reload-intervall 30`"), failures
    assert failures[1].endswith("lists no --reload-intervall"), failures


def test_what_counts_as_a_command(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("`mrl` is the project; `mrl/cli/`, `mrl-drift`, `mrl.funnel` and `fashion-mnist-mrl@champion` are\n"
                   "names. `mrl index unlock [--videos]` and `mrl search --id ID` / `--image PNG`; `mrl pipeline\n"
                   "run --host` wraps.\n\n"
                   "```bash\n"
                   "# mrl serve, in a comment\n"
                   "cd /tmp && mrl drift --current \"a --b\" --split test | tail -1   # --not-this\n"
                   "  mrl model compare --metric ndcg_at_10 \\\n"
                   "    --plot cmp.png\n"
                   "search service: mrl serve --milvus-uri /x/milvus.db   (search page http://127.0.0.1:8000/)\n"
                   "python -m mrl.video.synth --out x\n"
                   "kubectl -n mrl rollout restart deployment/mrl-search\n"
                   "components/   KFP components, each calling one mrl function\n"
                   "MRL_ADMIN_TOKEN=x MILVUS_URI=y mrl serve --host 0.0.0.0\n"
                   "```\n")
    assert [(c.line, c.path, c.options) for c in collect([doc])] == [
        (2, ("index", "unlock"), ("--videos",)),
        (2, ("search",), ("--id",)),
        (2, ("pipeline", "run"), ("--host",)),
        (7, ("drift",), ("--current", "--split")),
        (8, ("model", "compare"), ("--metric", "--plot")),
        (10, ("serve",), ("--milvus-uri",)),
        (14, ("serve",), ("--host",)),
    ]
