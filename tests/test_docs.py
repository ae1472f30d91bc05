"""The docs against the code: links resolve, shown commands use flags the tools accept, console scripts import.

The references are the files themselves and each tool's own argparse parser, captured as its
`main` builds it (no copy of a flag list here), so a renamed flag or a moved page fails here.
"""
import argparse
import configparser
import glob
import importlib
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)     # indented too (in a list)
SPAN = re.compile(r"`([^`]+)`")
TOOL = re.compile(r"(?:^|[\s/])(?:tools/(\w+)\.py|(alexnet-\w+))(?=\s|$)")
# where a shown command ends: a shell operator or a comment after it
END = re.compile(r"\s(?:&&|\|\||[|;]|#)(?:\s|$)")


def rel(path):
    return os.path.relpath(path, ROOT)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    with open(path, encoding="utf-8") as f:
        text = FENCE.sub("", f.read())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def broken_links(path, text):
    """Each relative link of `text` (the page at `path`) whose file or heading is not there."""
    bad = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):       # http:, https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(dest):
            bad.append(f"{rel(path)}: {target} (no such file)")
        elif fragment and dest.endswith(".md") and fragment not in anchors(dest):
            bad.append(f"{rel(path)}: {target} (no such heading in {rel(dest)})")
    return bad


def console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines if line.strip())


class _Parsed(BaseException):
    """Raised in place of parsing: carries the parser a tool's main built (BaseException: no wrapper catches it)."""


def tool_parser(module_name, monkeypatch):
    """The argparse parser that `alexnet_mp.cli.<module_name>.main` builds, captured before it parses."""
    def capture(self, *args, **kwargs):
        raise _Parsed(self)
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", capture)
        m.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        try:
            importlib.import_module(f"alexnet_mp.cli.{module_name}").main(["--help"])
        except _Parsed as parsed:
            return parsed.args[0]
    raise AssertionError(f"alexnet_mp.cli.{module_name}.main never built an argparse parser")


def subparsers(parser):
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def shown_commands(text):
    """(tool, argument tokens) of every tools/*.py or console-script command in the code blocks of `text`,
    and in its inline code spans (a command in a table or a sentence)."""
    found = []
    spans = [" ".join(span.split()) for span in SPAN.findall(FENCE.sub("", text))]
    for block in FENCE.findall(text) + spans:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.lstrip("# ")                       # commands shown in comments count too
            for m in TOOL.finditer(line):
                rest = line[m.end():]
                cut = END.search(rest)
                rest = rest[:cut.start()] if cut else rest
                try:
                    tokens = shlex.split(rest)
                except ValueError:
                    tokens = rest.split()
                found.append((m.group(1) or m.group(2), tokens))
    return found


def unknown_flags(parser, tokens):
    """The flag tokens that `parser` (or the subcommand named among `tokens`) does not define."""
    subs = subparsers(parser)
    chosen = next((subs[t] for t in tokens if t in subs), None)
    known = set(parser._option_string_actions) | set(chosen._option_string_actions if chosen else ())
    bad = []
    for token in tokens:
        if not token.startswith("-") or token == "-" or re.fullmatch(r"-[\d.]+", token):
            continue
        flag = token.split("=", 1)[0]
        if flag in known or (not flag.startswith("--") and flag[:2] in known):   # -j16
            continue
        bad.append(flag)
    return bad


def module_of(tool, scripts):
    if tool.startswith("alexnet-"):
        return scripts[tool].split(":")[0].rsplit(".", 1)[1]
    return tool


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_every_relative_link_in_the_readme_and_docs_resolves():
    bad = [b for page in PAGES for b in broken_links(page, read(page))]
    assert not bad, "links to nothing:\n" + "\n".join(bad)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading, with punctuation\n")
    text = ("[ok](there.md) [ok](there.md#a-heading-with-punctuation) [web](https://example.org/x)\n"
            "[gone](missing.md) [no heading](there.md#nope)\n```\n[in code](ignored.md)\n```\n")
    page.write_text(text)
    bad = broken_links(str(page), text)
    assert len(bad) == 2 and "missing.md" in bad[0] and "there.md#nope" in bad[1]


def test_every_tool_command_shown_uses_only_flags_the_tool_accepts(monkeypatch):
    scripts = console_scripts()
    parsers, bad, seen = {}, [], 0
    for page in PAGES:
        for tool, tokens in shown_commands(read(page)):
            module = module_of(tool, scripts)
            if module not in parsers:
                assert os.path.exists(os.path.join(ROOT, "tools", f"{module}.py")), f"{rel(page)}: no tools/{module}.py"
                parsers[module] = tool_parser(module, monkeypatch)
            seen += 1
            bad += [f"{rel(page)}: {tool} {' '.join(tokens)}: {flag}" for flag in unknown_flags(parsers[module], tokens)]
    assert seen >= 10, "the README and docs show fewer tool commands than expected: is the extraction broken?"
    assert not bad, "flags no tool accepts:\n" + "\n".join(bad)


def test_the_flag_check_reads_subcommands_comments_and_shell_operators(monkeypatch):
    text = ("Inline: `python tools/train.py --epochs 2\n--no-such-inline-flag`.\n"
            "```sh\npython tools/visualize.py curves --metrics m.jsonl --out c.png && ls --color\n"
            "# python tools/visualize.py filters --checkpoint c.pt --metrics m.jsonl   # --nothing here\n"
            "torchrun --nproc_per_node=2 tools/train.py -j4 --lr=0.01 --no-such-flag \\\n  --epochs 2\n```\n"
            "- in a list:\n\n  ```sh\n  python tools/visualize.py curves --out c.png --in-a-list\n  ```\n")
    parser_of = {m: tool_parser(m, monkeypatch) for m in ("visualize", "train")}
    found = {(tool, flag) for tool, tokens in shown_commands(text) for flag in unknown_flags(parser_of[tool], tokens)}
    assert found == {("visualize", "--metrics"), ("train", "--no-such-flag"), ("train", "--no-such-inline-flag"),
                     ("visualize", "--in-a-list")}


@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_every_console_script_in_setup_cfg_imports(script):
    module, _, attr = console_scripts()[script].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_citation_and_licence_name_this_version_and_the_declared_licence():
    cff = read(os.path.join(ROOT, "CITATION.cff"))
    init = read(os.path.join(ROOT, "alexnet_mp", "__init__.py"))
    version = re.search(r'^__version__ = "([^"]+)"', init, re.M).group(1)
    assert re.search(rf"^version: \"?{re.escape(version)}\"?$", cff, re.M), "CITATION.cff's version is not the package's"
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    declared = cfg["metadata"]["license"]
    assert re.search(rf"^license: {re.escape(declared)}$", cff, re.M)
    assert declared == "BSD-3-Clause" and read(os.path.join(ROOT, "LICENSE")).startswith("BSD 3-Clause License")
