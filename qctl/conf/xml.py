"""The only door to lxml: a hardened XML reader and a small writer.

Reading refuses everything that lets a document reach outside itself or blow up in memory:
no DTDs, no entity declarations (a ``<!DOCTYPE`` is refused before lxml sees the document),
no entity resolution, no network, no huge trees. lxml's errors become
:class:`~qctl.errors.XMLSyntaxError` with the line and column.

The rest of :mod:`qctl.conf` sees documents only through :class:`XMLNode` (a read-only view)
and builds output as plain :class:`OutElement` trees, so no lxml type escapes this module.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lxml import etree

from qctl.conf.document import check_size
from qctl.errors import XMLSyntaxError

__all__ = ["OutElement", "XMLNode", "read_xml", "render_xml"]

INDENT = "  "

# What may come before the root element besides a DOCTYPE: whitespace, the XML declaration
# and other processing instructions, comments.
_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.DOTALL)
_XML_DECLARATION = re.compile(r"\A(\ufeff?)(<\?xml\s[^>]*\?>)")
_LXML_POSITION = re.compile(r", line \d+, column \d+$")
_FRAGMENT_WRAPPER = "qctl-fragment"


def _parser() -> etree.XMLParser:
    """A fresh parser that resolves nothing and loads nothing (parsers are not thread-safe)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
    )


def _as_bytes(data: str | bytes, source: str | None) -> bytes:
    """The document as bytes; a text document's own encoding declaration is blanked out.

    A ``str`` is already decoded, so a declaration like ``encoding='latin-1'`` would make
    libxml2 decode it a second time. It is replaced by spaces to keep lines and columns.
    """
    if isinstance(data, bytes):
        return data
    text = _XML_DECLARATION.sub(lambda m: m.group(1) + " " * len(m.group(2)), data, count=1)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line, column = _position(text, exc.start)
        raise XMLSyntaxError(
            "the document is not valid Unicode", source=source, line=line, column=column
        ) from exc


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _refuse_doctype(data: bytes, source: str | None) -> None:
    """Refuse a document type declaration: DTDs are where entities (XXE, bombs) live."""
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while (match := _PROLOG_ITEM.match(data, pos)) is not None:
        pos = match.end()
    if data.startswith(b"<!DOCTYPE", pos):
        line, column = _position(data[:pos].decode("latin-1"), pos)
        raise XMLSyntaxError(
            "DOCTYPE declarations are not allowed (no DTDs, no entity declarations)",
            source=source,
            line=line,
            column=column,
        )


def _drop_blank_text(root: etree._Element) -> None:
    """Remove whitespace-only text between elements, so output indentation is ours alone."""
    for element in root.iter():
        if len(element):
            if element.text is not None and not element.text.strip():
                element.text = None
            for child in element:
                if child.tail is not None and not child.tail.strip():
                    child.tail = None


def _parse_root(data: str | bytes, source: str | None) -> etree._Element:
    """Parse a whole document safely; the root element with blank text removed."""
    check_size(data, source)
    raw = _as_bytes(data, source)
    _refuse_doctype(raw, source)
    try:
        root = etree.fromstring(raw, _parser())
    except etree.ParseError as exc:
        line, column = exc.position
        message = _LXML_POSITION.sub("", exc.msg or "malformed XML")
        raise XMLSyntaxError(
            message, source=source, line=line or None, column=column or None
        ) from exc
    # A DOCTYPE the prolog scan could not see (a UTF-16 document): refuse it all the same.
    if root.getroottree().docinfo.internalDTD is not None:
        raise XMLSyntaxError(
            "DOCTYPE declarations are not allowed (no DTDs, no entity declarations)",
            source=source,
            line=1,
        )
    _drop_blank_text(root)
    return root


def read_xml(data: str | bytes, *, source: str | None = None) -> XMLNode:
    """Parse a whole document safely and return its root element.

    Raises :class:`XMLSyntaxError` (with line and column) when the document is not
    well-formed or declares a DOCTYPE.
    """
    return XMLNode(_parse_root(data, source))


class XMLNode:
    """A read-only view of one parsed node: an element, a comment or a processing instruction.

    ``tag`` is the element name (``{uri}local`` when namespaced), or ``#comment``/``#pi``.
    """

    __slots__ = ("_element",)

    def __init__(self, element: etree._Element) -> None:
        self._element = element

    @property
    def tag(self) -> str:
        """The element name, or ``#comment``/``#pi`` for other nodes."""
        if isinstance(self._element, etree._Comment):
            return "#comment"
        if isinstance(self._element, etree._ProcessingInstruction):
            return "#pi"
        if not isinstance(self._element.tag, str):
            return "#other"
        return self._element.tag

    @property
    def is_element(self) -> bool:
        """True for elements (comments and processing instructions are not)."""
        return not self.tag.startswith("#")

    @property
    def line(self) -> int | None:
        """The 1-based line the node starts on."""
        line: object = self._element.sourceline  # the stubs do not type it
        return line if isinstance(line, int) else None

    @property
    def attrs(self) -> dict[str, str]:
        """The attributes in document order (none for comments)."""
        if not self.is_element:
            return {}
        return {str(name): str(value) for name, value in self._element.attrib.items()}

    @property
    def text(self) -> str | None:
        """The text before the first child."""
        return self._element.text if self.is_element else None

    @property
    def namespaces(self) -> tuple[tuple[str, str], ...]:
        """The prefixed namespaces in scope (for the root: the ones it declares)."""
        return tuple(
            (prefix, uri) for prefix, uri in self._element.nsmap.items() if prefix is not None
        )

    def children(self) -> list[XMLNode]:
        """The child nodes in document order."""
        return [XMLNode(child) for child in self._element] if self.is_element else []

    def to_xml(self) -> str:
        """This node alone as XML text, with the namespace declarations it needs.

        A copy is serialized so that only the namespaces the node uses (or declares itself)
        are declared, not every one in scope at its place in the document.
        """
        alone = copy.deepcopy(self._element)
        alone.tail = None
        return etree.tostring(alone, encoding="unicode")


@dataclass
class OutElement:
    """An element to write: attributes in the order given, then text or children.

    A ``str`` child is a verbatim XML fragment (from :class:`~qctl.conf.model.RawXML`).
    """

    tag: str
    attrs: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None
    children: list[OutElement | str] = field(default_factory=list)


def _build(out: OutElement, parent: etree._Element) -> None:
    """Append ``out`` under ``parent``."""
    element = etree.SubElement(parent, out.tag)
    _fill(out, element)


def _fill(out: OutElement, element: etree._Element) -> None:
    """Give ``element`` the attributes, text and children of ``out``."""
    for name, value in out.attrs:
        element.set(name, value)
    element.text = out.text
    for child in out.children:
        if isinstance(child, str):
            _append_fragment(element, child)
        else:
            _build(child, element)


def _append_fragment(parent: etree._Element, xml: str) -> None:
    """Parse a verbatim fragment (with the same hardening) and append its nodes to ``parent``."""
    wrapper = _parse_root(f"<{_FRAGMENT_WRAPPER}>{xml}</{_FRAGMENT_WRAPPER}>", "<fragment>")
    for node in list(wrapper):
        node.tail = None
        parent.append(node)


#: what lxml escapes in attribute values and in text (libxml2's own choice of entities)
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;",
     "\t": "&#9;"}
)  # fmt: skip
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
#: what only lxml writes (or refuses): a namespaced name, a character XML forbids
_NOT_PLAIN_NAME = re.compile(r"[:{}]")
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _write_plain(out: OutElement, level: int, parts: list[str]) -> bool:
    """Append ``out`` as lxml writes it after :func:`_indent`; False (and ``parts`` to be
    dropped) when the tree needs lxml itself."""
    if _NOT_PLAIN_NAME.search(out.tag):
        return False
    parts.append(f"<{out.tag}")
    for name, value in out.attrs:
        if _NOT_PLAIN_NAME.search(name) or _NOT_XML_CHAR.search(value):
            return False
        parts.append(f' {name}="{value.translate(_ATTR_ESCAPES)}"')
    text = out.text
    if text is not None and _NOT_XML_CHAR.search(text):
        return False
    if not out.children:
        parts.append("/>" if text is None else f">{text.translate(_TEXT_ESCAPES)}</{out.tag}>")
        return True
    if text is not None and text.strip():
        return False  # mixed content
    inner = "\n" + INDENT * (level + 1)
    parts.append(">")
    for child in out.children:
        if isinstance(child, str):
            return False  # a verbatim fragment: parsed by lxml
        parts.append(inner)
        if not _write_plain(child, level + 1, parts):
            return False
    parts.append(f"\n{INDENT * level}</{out.tag}>")
    return True


def _indent(root: etree._Element) -> None:
    """Indent the tree by :data:`INDENT` per level, touching only whitespace-only text."""
    stack: list[tuple[etree._Element, int]] = [(root, 0)]
    while stack:
        element, level = stack.pop()
        if not len(element):
            continue
        inner = "\n" + INDENT * (level + 1)
        if not (element.text or "").strip():
            element.text = inner
        children = list(element)
        for child in children:
            if not (child.tail or "").strip():
                child.tail = inner
            stack.append((child, level + 1))
        if not (children[-1].tail or "").strip():
            children[-1].tail = "\n" + INDENT * level


def render_xml(root: OutElement, *, namespaces: Sequence[tuple[str, str]] = ()) -> str:
    """Serialize ``root`` with two-space indentation and a trailing newline.

    ``namespaces`` are ``(prefix, uri)`` declarations to put on the root element.
    Raises :class:`XMLSyntaxError` when a verbatim fragment is not well-formed.

    A plain tree (no namespace, no verbatim fragment, no mixed content, only characters
    XML allows) is written here as text, as lxml would write it: a device's XML is written
    at every hot-plug step, and building it in lxml first cost four times as much.
    Anything else goes through lxml.
    """
    if not namespaces:
        parts: list[str] = []
        if _write_plain(root, 0, parts):
            parts.append("\n")
            return "".join(parts)
    element = etree.Element(root.tag, nsmap=dict(namespaces) or None)
    _fill(root, element)
    _indent(element)
    return etree.tostring(element, encoding="unicode") + "\n"
