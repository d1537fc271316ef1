#!/usr/bin/env python3
"""Every link in README.md and docs/ resolves, and none leaves the repository.

For each markdown link `[text](target)` (and reference definition
`[name]: target`) outside code:
- a relative target must name a file or folder of the repository;
- a `#fragment` on a markdown file (or alone, for the same file) must be
  one of that file's headings, slugged as GitHub does;
- a target with a scheme (http:, https:, mailto:, ...) is refused: the
  project points at nothing outside itself.
Prints each problem as FILE:LINE: message and exits 1 if there is any.

Usage: python3 tests/docs/links.py [FILE.md ...]   (default: README.md docs/**/*.md)
"""
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

FENCE = re.compile(r"^\s*(```+|~~~+)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(path):
    """(line number, text) of each line outside fenced code blocks."""
    fence = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            m = FENCE.match(line)
            if m:
                mark = m.group(1)[0] * 3
                if fence is None:
                    fence = mark
                elif mark == fence:
                    fence = None
                continue
            if fence is None:
                yield number, line.rstrip("\n")


def slug(heading):
    """GitHub's anchor for a heading: its text, lower case, without
    punctuation but `-` and `_`, spaces turned into `-`."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link: its text
    text = text.replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    if path not in _anchors:
        seen = {}
        found = set()
        for _, line in prose_lines(path):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        _anchors[path] = found
    return _anchors[path]


def targets(path):
    for number, line in prose_lines(path):
        without_code = CODE_SPAN.sub("", line)
        for m in INLINE_LINK.finditer(without_code):
            yield number, m.group(1)
        m = REFERENCE.match(without_code)
        if m:
            yield number, m.group(1)
        for m in AUTOLINK.finditer(without_code):
            yield number, m.group(1)


def check(path):
    problems = []
    where = os.path.relpath(path, ROOT)
    for number, target in targets(path):
        if SCHEME.match(target):
            problems.append(f"{where}:{number}: {target}: points outside the repository")
            continue
        file_part, _, fragment = target.partition("#")
        if file_part:
            if file_part.startswith("/"):
                resolved = os.path.join(ROOT, file_part.lstrip("/"))
            else:
                resolved = os.path.join(os.path.dirname(path), file_part)
            resolved = os.path.normpath(resolved)
            if not (resolved == ROOT or resolved.startswith(ROOT + os.sep)):
                problems.append(f"{where}:{number}: {target}: points outside the repository")
                continue
            if not os.path.exists(resolved):
                problems.append(f"{where}:{number}: {target}: no such file")
                continue
        else:
            resolved = path
        if fragment and resolved.endswith(".md") and os.path.isfile(resolved):
            if fragment not in anchors(resolved):
                problems.append(
                    f"{where}:{number}: {target}: no heading "
                    f"#{fragment} in {os.path.relpath(resolved, ROOT)}"
                )
    return problems


def main(argv):
    if argv:
        files = [os.path.abspath(a) for a in argv]
    else:
        files = [os.path.join(ROOT, "README.md")]
        for folder, _, names in sorted(os.walk(os.path.join(ROOT, "docs"))):
            files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".md")]
    problems = []
    links = 0
    for f in files:
        links += sum(1 for _ in targets(f))
        problems += check(f)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"links: {len(problems)} broken in {len(files)} files", file=sys.stderr)
        return 1
    print(f"links: {links} links in {len(files)} files, all resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
