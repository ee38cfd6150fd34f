#!/usr/bin/env python3
"""config_doc.py: every setting the config loader accepts is in docs/CONFIG.md,
and every setting CONFIG.md lists is one the loader accepts (run by make test).

The loader's truth is its `known[]` lists: each `static const char *const
known[] = { "a", "b", NULL };` in config/*.c names every setting one group
accepts (check.c's cfg_check_names rejects any other). The docs' side is the
tables of docs/CONFIG.md whose header's first cell is `Setting`: the first
cell of each row is a setting name in backquotes, and the table belongs to the
heading above it.

Each known[] list must equal the set of names of one such table, and each such
table must equal some known[] list. When a list matches no table, the table
sharing most names with it is named, with what it lacks and what it has too
many. The top-level list (config_check_root) is compared with the table under
"Top level" in the same way.

Each of those settings must also be named in the man page man/herald.cfg.5
(as a word of its roff source: a weaker check, since that page is a summary).

Groups documented in a page of their own are in OWN_PAGE: their top-level
name needs a `## NAME` heading in CONFIG.md (not a row of the top-level
table), and the settings of the known[] list in their own config/NAME.c must
each appear in backquotes in that page.

Usage: tests/config_doc.py [ROOT]   (ROOT: the repository, default: this file's ../)
Exit 0 when all agree; 1 with one line per problem.
"""
import os
import re
import sys

OWN_PAGE = {"sources": "docs/SOURCES.md"}

KNOWN_RE = re.compile(r"known\[\]\s*=\s*\{(.*?)\}\s*;", re.S)
FUNC_RE = re.compile(r"^[A-Za-z_][\w \*]*?\b(\w+)\s*\([^;]*$", re.M)
HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
ROW_NAME_RE = re.compile(r"^\|\s*`([^`]+)`\s*\|")


def known_lists(root):
    """[(file, line, function, [names])] for every known[] list in config/*.c."""
    out = []
    cdir = os.path.join(root, "config")
    for fn in sorted(os.listdir(cdir)):
        if not fn.endswith(".c"):
            continue
        path = os.path.join(cdir, fn)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in KNOWN_RE.finditer(text):
            body = m.group(1)
            names = re.findall(r'"([^"]*)"', body)
            if "NULL" not in body:
                continue
            line = text.count("\n", 0, m.start()) + 1
            funcs = [fm.group(1) for fm in FUNC_RE.finditer(text, 0, m.start())]
            out.append(("config/" + fn, line, funcs[-1] if funcs else "(file scope)", names))
    return out


def doc_tables(path):
    """[(heading, line, [names])] for every table whose first header cell is Setting."""
    tables = []
    heading = "(no heading)"
    cur = None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    in_code = False
    for i, raw in enumerate(lines, 1):
        s = raw.strip()
        if s.startswith("```"):
            in_code = not in_code
            cur = None
            continue
        if in_code:
            continue
        h = HEADING_RE.match(s)
        if h:
            heading = h.group(2).replace("`", "")
            cur = None
            continue
        if not s.startswith("|"):
            cur = None
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if cur is None:
            if cells and cells[0] == "Setting":
                cur = (heading, i, [])
                tables.append(cur)
            else:
                cur = False  # some other table: skip to its end
            continue
        if cur is False or set(s) <= set("|-: "):
            continue
        m = ROW_NAME_RE.match(s)
        if not m:
            tables_problem.append("%s:%d: a row of the table under '%s' does not start with a `name`"
                                  % (os.path.relpath(path), i, heading))
            continue
        cur[2].append(m.group(1))
    return tables


def headings(path, level):
    with open(path, encoding="utf-8") as f:
        return [m.group(2).replace("`", "") for m in map(HEADING_RE.match, f.read().split("\n"))
                if m and len(m.group(1)) == level]


tables_problem = []


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    doc = os.path.join(root, "docs", "CONFIG.md")
    problems = []
    lists = known_lists(root)
    tables = doc_tables(doc)
    problems += tables_problem
    if not lists:
        problems.append("config/*.c: no known[] list found: has the loader changed its form?")
    if not tables:
        problems.append("docs/CONFIG.md: no table whose header starts with 'Setting'")
    h2 = headings(doc, 2)
    man_path = os.path.join(root, "man", "herald.cfg.5")
    man = open(man_path, encoding="utf-8").read() if os.path.exists(man_path) else None
    if man is None:
        problems.append("man/herald.cfg.5: missing")
    matched = set()
    for file, line, func, names in lists:
        where = "%s:%d (%s)" % (file, line, func)
        if len(set(names)) != len(names):
            problems.append("%s: known[] lists a name twice" % where)
        group = os.path.basename(file)[:-2]
        if group in OWN_PAGE:
            page = os.path.join(root, OWN_PAGE[group])
            if not os.path.exists(page):
                problems.append("%s: the settings of '%s' are documented in %s, which does not exist"
                                % (where, group, OWN_PAGE[group]))
                continue
            with open(page, encoding="utf-8") as f:
                text = f.read()
            missing = [n for n in names if "`%s`" % n not in text]
            if missing:
                problems.append("%s: not in %s: %s" % (where, OWN_PAGE[group], ", ".join(missing)))
            continue
        if man is not None:
            unnamed = [n for n in names if not re.search(r"(?<!\w)%s(?!\w)" % re.escape(n), man)]
            if unnamed:
                problems.append("%s: not named in man/herald.cfg.5: %s" % (where, ", ".join(unnamed)))
        want = set(names)
        if func == "config_check_root":
            for g in sorted(want & set(OWN_PAGE)):
                if g not in h2:
                    problems.append("%s: top-level group '%s' has no '## %s' heading in docs/CONFIG.md"
                                    % (where, g, g))
            want -= set(OWN_PAGE)
        hits = [k for k, t in enumerate(tables) if set(t[2]) == want]
        if hits:
            matched.update(hits)
            continue
        best = max(range(len(tables)), key=lambda k: len(set(tables[k][2]) & want), default=None)
        if best is None or not set(tables[best][2]) & want:
            problems.append("%s: no table in docs/CONFIG.md lists these settings: %s"
                            % (where, ", ".join(names)))
            continue
        matched.add(best)
        head, tline, tnames = tables[best]
        lacks = sorted(want - set(tnames))
        extra = sorted(set(tnames) - want)
        if lacks:
            problems.append("%s: accepted by the loader but not in docs/CONFIG.md's table under '%s' (line %d): %s"
                            % (where, head, tline, ", ".join(lacks)))
        if extra:
            problems.append("docs/CONFIG.md:%d: the table under '%s' lists what %s does not accept: %s"
                            % (tline, head, where, ", ".join(extra)))
    for k, (head, tline, tnames) in enumerate(tables):
        if k not in matched:
            problems.append("docs/CONFIG.md:%d: the table under '%s' matches no known[] list in config/*.c: %s"
                            % (tline, head, ", ".join(tnames)))
    for p in problems:
        print("config_doc: " + p)
    if problems:
        return 1
    print("config_doc: ok (%d known[] lists, %d settings, all in docs/CONFIG.md and man/herald.cfg.5%s)"
          % (len(lists), sum(len(l[3]) for l in lists),
             "".join(" and " + p for g, p in OWN_PAGE.items() if os.path.exists(os.path.join(root, p)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
