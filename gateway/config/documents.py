"""YAML text to one node tree: bounds, ``${ENV}`` substitution and ``include:`` files.

A config is a main file and the files its top-level ``include:`` names (glob patterns such as
``conf.d/*.yaml``, relative to the main file's folder). They are merged in a fixed order: the
main file first, then each pattern in turn, the files of one pattern in name order. Mappings
merge key by key, lists are appended (so each file may add ``sources``), and any other value
of a later file replaces the earlier one. Merging happens on PyYAML's nodes, before
construction, so every key keeps the file and line it was written on and every error names
them. Every bound holds for all files together: bytes, nodes, files, depth; a file included
twice (or by itself) is refused.

``${NAME}`` and ``${NAME:-default}`` in a value are replaced by the environment variable
(``:-``: the default when it is unset or empty); ``$${`` is a literal ``${``. The result is
read as if written there (``1883`` a number, ``true`` a boolean): quote the reference to keep
a string. A missing variable without a default is an error naming file:line and the
variable. Error messages show the reference, never the value it stood for. Substituted
values count against the same byte bound as the files.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError, ConfigIssue

# Bounds on what a config can make the loader read or build (#13 item 10): a 9-level alias
# bomb once took 2.6 GB, /dev/zero as a password_file 1.8 GB. All files together.
MAX_CONFIG_BYTES = 1_048_576
MAX_CONFIG_NODES = 100_000  # YAML nodes once every alias is expanded
MAX_INCLUDE_FILES = 64
MAX_INCLUDE_DEPTH = 4  # an included file may include others, this many levels down
# What password_env and ${...} may name. Upper case only: a value that is not a conventional
# variable name is never echoed, in case it is a password written into the wrong key.
ENV_NAME_PATTERN = r"[A-Z_][A-Z0-9_]{0,127}"

_REFERENCE_RE = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
_GLOB_CHARS = frozenset("*?[")
_RESOLVER = yaml.resolver.Resolver()

KeyPath = tuple[Any, ...]


class TooLarge(ValueError):
    pass


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. OSError if it cannot be read,
    ValueError (saying why, without the path) if it is no regular file, TooLarge if it is
    larger. Opened non-blocking, so a FIFO cannot hang the loader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("is not a regular file")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"is larger than {limit} bytes")
    return data


class Lines:
    """Maps key paths to the file and line they stand on, from PyYAML's node tree."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, tuple[str, int]] = {}
        self.duplicates: list[tuple[KeyPath, str, int]] = []
        # Values that came from ${...}: path -> (the text as written, the text it became).
        self.substituted: dict[KeyPath, tuple[str, str]] = {}

    def walk(
        self,
        node: yaml.Node,
        path: KeyPath = (),
        substituted: dict[int, tuple[str, str]] | None = None,
    ) -> None:
        self.lines.setdefault(path, _where(node))
        if substituted and id(node) in substituted:
            self.substituted[path] = substituted[id(node)]
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = key_node.value
                if key in seen:
                    self.duplicates.append((path + (key,), *_where(key_node)))
                seen.add(key)
                self.lines[path + (key,)] = _where(key_node)
                self.walk(value_node, path + (key,), substituted)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, path + (index,), substituted)

    def line_of(self, path: KeyPath) -> tuple[str, int] | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def _where(node: yaml.Node) -> tuple[str, int]:
    return node.start_mark.name, node.start_mark.line + 1


@dataclass
class Tree:
    """The merged node tree of a config and its includes (``root`` None: empty)."""

    root: yaml.Node | None
    lines: Lines
    files: list[str] = field(default_factory=list)


class _Refused(Exception):
    pass


class _Reader:
    """One load: the budget all files share, the files read so far, the issues found."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.bytes_left = MAX_CONFIG_BYTES
        self.seen: dict[Path, str] = {}  # file (resolved) -> where it was included from
        self.files: list[str] = []  # the included files as named, in merge order
        self.issues: list[ConfigIssue] = []
        self.substituted: dict[int, tuple[str, str]] = {}
        self.tagged: set[int] = set()  # scalars with an explicit tag (!!str)
        self.duplicates: list[tuple[KeyPath, str, int]] = []

    def document(
        self, text: str, filename: str, chain: tuple[Path, ...], depth: int = 0
    ) -> yaml.Node | None:
        """One file's tree, its references substituted and its includes merged into it.
        ``chain``: the files on the way to it (to refuse a cycle); ``depth``: its include
        level (0: the main file)."""
        root = compose(text, filename, self.tagged)
        if root is None:
            return None
        self._substitute(root, filename)
        per_file = Lines()
        per_file.walk(root)
        self.duplicates += per_file.duplicates
        if not isinstance(root, yaml.MappingNode):
            return root
        include = _pop(root, "include")
        if include is not None:
            for path, where in self._included(include, filename, depth):
                merged = self._file(path, where, chain, depth + 1)
                if merged is None:
                    continue
                if not isinstance(merged, yaml.MappingNode):
                    self.issues.append(
                        ConfigIssue(
                            str(path), _where(merged)[1], "", "must be a mapping of sections"
                        )
                    )
                    continue
                root = merge(root, merged)
        return root

    def _included(
        self, node: yaml.Node, filename: str, depth: int
    ) -> list[tuple[Path, tuple[str, int, str]]]:
        """The files ``include:`` names, in merge order, each with where it is named."""
        if depth >= MAX_INCLUDE_DEPTH:
            self._issue(node, "include", f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels")
            return []
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []  # `include:` with every line commented out
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        found: list[tuple[Path, tuple[str, int, str]]] = []
        for index, item in enumerate(items):
            key = f"include[{index}]" if isinstance(node, yaml.SequenceNode) else "include"
            if not isinstance(item, yaml.ScalarNode) or not item.value:
                self._issue(item, key, "must be a file name or a glob pattern (conf.d/*.yaml)")
                continue
            pattern = os.path.expanduser(item.value)
            where = (filename, _where(item)[1], key)
            if _GLOB_CHARS.isdisjoint(pattern):
                found.append((self.base / pattern, where))
                continue
            root_dir = None if os.path.isabs(pattern) else str(self.base)
            matches = sorted(glob.glob(pattern, root_dir=root_dir))
            found += [(self.base / match, where) for match in matches]
        return found

    def _file(
        self, path: Path, where: tuple[str, int, str], chain: tuple[Path, ...], depth: int
    ) -> yaml.Node | None:
        filename, line, key = where

        def refuse(message: str) -> None:
            self.issues.append(ConfigIssue(filename, line, key, message))

        resolved = path.resolve()
        if resolved in chain:
            loop = " -> ".join(str(p) for p in (*chain[chain.index(resolved) :], resolved))
            refuse(f"{path} includes itself: {loop}")
            return None
        if resolved in self.seen:
            refuse(f"{path} is already included (from {self.seen[resolved]})")
            return None
        if len(self.seen) >= MAX_INCLUDE_FILES:
            refuse(f"more than {MAX_INCLUDE_FILES} included files")
            raise _Refused
        try:
            data = read_bounded(path, self.bytes_left)
            text = data.decode("utf-8")
        except OSError as exc:
            refuse(f"cannot read {path}: {exc.strerror}")
            return None
        except UnicodeDecodeError:
            refuse(f"{path} is not UTF-8 text")
            return None
        except TooLarge as exc:
            refuse(f"{path}: the config and its includes are larger than {MAX_CONFIG_BYTES} bytes")
            raise _Refused from exc
        except ValueError as exc:
            refuse(f"{path} {exc}")
            return None
        self.bytes_left -= len(data)
        self.seen[resolved] = f"{filename}:{line}"
        self.files.append(str(path))
        return self.document(text, str(path), (*chain, resolved), depth)

    def _substitute(self, root: yaml.Node, filename: str) -> None:
        done: set[int] = set()

        def visit(node: yaml.Node, path: KeyPath) -> None:
            if id(node) in done:  # an aliased node: substituted once, where first seen
                return
            done.add(id(node))
            if isinstance(node, yaml.ScalarNode):
                if "$" in node.value:
                    self._substitute_scalar(node, filename, path)
            elif isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    visit(value, path + (key.value,))
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    visit(item, path + (index,))

        visit(root, ())

    def _substitute_scalar(self, node: yaml.ScalarNode, filename: str, path: KeyPath) -> None:
        problems: list[str] = []

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            inner, closed = match.group(1), match.group(2)
            name, sep, default = inner.partition(":-")
            if not closed:
                problems.append("'${' without its closing '}' (write $${ for a literal ${)")
            elif not re.fullmatch(ENV_NAME_PATTERN, name):
                problems.append(
                    f"${{{inner}}} must name an environment variable (A-Z, 0-9, _), as "
                    "${NAME} or ${NAME:-default}"
                )
            elif "${" in default:
                problems.append(f"${{{name}:-...}}: a default cannot hold another ${{...}}")
            elif os.environ.get(name):
                return os.environ[name]
            elif sep:
                return default
            elif name not in os.environ:
                problems.append(
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-default}} for a default)"
                )
            return ""

        written = node.value
        value = _REFERENCE_RE.sub(replace, written)
        if problems:
            line = node.start_mark.line + 1
            for problem in problems:
                self.issues.append(ConfigIssue(filename, line, format_path(path), problem))
            return
        if value == written:
            return
        self.bytes_left -= max(0, len(value.encode("utf-8", "surrogatepass")) - len(written))
        if self.bytes_left < 0:
            where = format_path(path)
            message = f"refused: with ${{...}} substituted, the config is larger than {MAX_CONFIG_BYTES} bytes"
            self.issues.append(ConfigIssue(filename, node.start_mark.line + 1, where, message))
            raise _Refused
        node.value = value
        if node.style is None and id(node) not in self.tagged:  # typed as if written there
            node.tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
        self.substituted[id(node)] = (written, value)

    def _issue(self, node: yaml.Node, key: str, message: str) -> None:
        filename, line = _where(node)
        self.issues.append(ConfigIssue(filename, line, key, message))


def _pop(mapping: yaml.MappingNode, key: str) -> yaml.Node | None:
    for index, (key_node, value_node) in enumerate(mapping.value):
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            del mapping.value[index]
            return value_node
    return None


def merge(base: yaml.MappingNode, extra: yaml.MappingNode) -> yaml.MappingNode:
    """``extra`` merged into a copy of ``base``: mappings key by key, lists appended, any
    other value replaced. Nodes are copied, never changed: an aliased node may be shared."""
    pairs = list(base.value)
    index = {k.value: i for i, (k, _) in enumerate(pairs) if isinstance(k, yaml.ScalarNode)}
    for key, value in extra.value:
        i = index.get(key.value) if isinstance(key, yaml.ScalarNode) else None
        if i is None:
            index[key.value] = len(pairs)
            pairs.append((key, value))
            continue
        old_key, old = pairs[i]
        if isinstance(old, yaml.MappingNode) and isinstance(value, yaml.MappingNode):
            pairs[i] = (old_key, merge(old, value))
        elif isinstance(old, yaml.SequenceNode) and isinstance(value, yaml.SequenceNode):
            items = old.value + value.value
            pairs[i] = (old_key, yaml.SequenceNode(old.tag, items, old.start_mark, old.end_mark))
        else:
            pairs[i] = (key, value)
    return yaml.MappingNode(base.tag, pairs, base.start_mark, base.end_mark)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, noting the scalars with an explicit tag (``!!str ${X}``): the
    only ones a substituted value must not be typed anew for. A node does not say."""

    def __init__(self, text: str, tagged: set[int]) -> None:
        super().__init__(text)
        self.tagged = tagged  # ids of such nodes, kept by the caller as long as the nodes

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        explicit = self.peek_event().tag not in (None, "!")
        node: yaml.ScalarNode = super().compose_scalar_node(anchor)
        if explicit:
            self.tagged.add(id(node))
        return node


def compose(text: str, filename: str, tagged: set[int] | None = None) -> yaml.Node | None:
    """One YAML document's node tree, its marks named ``filename``; bounded in size.
    ``tagged`` receives the ids of its scalars with an explicit tag."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [ConfigIssue(filename, None, "", f"larger than {MAX_CONFIG_BYTES} bytes")]
        )
    loader = _Loader(text, tagged if tagged is not None else set())
    loader.name = filename
    try:
        root = loader.get_single_node()
        if root is not None:
            check_expansion(root, MAX_CONFIG_NODES)
        return root
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue(filename, line, "", f"invalid YAML: {problem}")]) from exc
    except AliasBomb as exc:
        raise ConfigError([ConfigIssue(filename, None, "", f"refused: {exc}")]) from exc
    except RecursionError as exc:
        raise ConfigError([ConfigIssue(filename, None, "", "refused: nested too deeply")]) from exc
    finally:
        loader.dispose()


def read_tree(text: str, filename: str, base: Path, path: Path | None = None) -> Tree:
    """The main file's text, its references substituted and its includes merged; raises
    ConfigError with every issue found (except those that validation finds)."""
    reader = _Reader(base)
    reader.bytes_left -= len(text.encode("utf-8", "surrogatepass"))
    chain = (path.resolve(),) if path is not None else ()
    root: yaml.Node | None = None
    try:
        root = reader.document(text, filename, chain)
        if root is not None:
            check_expansion(root, MAX_CONFIG_NODES)
    except AliasBomb as exc:
        reader.issues.append(ConfigIssue(filename, None, "", f"refused: {exc}"))
    except _Refused:
        pass
    if reader.issues:
        reader.issues.sort(key=lambda i: (i.file != filename, i.file, i.line or 0, i.path))
        raise ConfigError(reader.issues)
    lines = Lines()
    if root is not None:
        lines.walk(root, substituted=reader.substituted)
    lines.duplicates = reader.duplicates
    return Tree(root, lines, [filename, *reader.files])


def construct(root: yaml.Node | None) -> Any:
    """The Python data of a (merged) node tree."""
    if root is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = (mark.name, mark.line + 1) if mark is not None else ("<config>", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [ConfigIssue(where[0], where[1], "", f"invalid YAML: {problem}")]
        ) from exc
    except RecursionError as exc:
        raise ConfigError(
            [ConfigIssue("<config>", None, "", "refused: nested too deeply")]
        ) from exc
    finally:
        loader.dispose()


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class AliasBomb(Exception):
    pass


def check_expansion(root: yaml.Node, limit: int) -> None:
    """Count the nodes the document has once aliases are expanded; PyYAML shares an aliased
    node, but the line map, the constructor's merge keys and validation all walk it again."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise AliasBomb("an alias refers to the node it is inside of")
        active.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise AliasBomb(f"more than {limit} YAML nodes once aliases are expanded")
        active.discard(key)
        sizes[key] = total
        return total

    size(root)
