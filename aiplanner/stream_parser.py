"""An incremental parser for one streamed JSON array: each element is returned as soon as its
last byte arrives, so a packed answer's first agents can act while the model still writes the rest.

The scanner keeps its state between chunks (bracket stack, inside-a-string, pending escape) and
buffers only the bytes of the element being read: every byte is looked at once, whatever the
chunking. It works on bytes, so a chunk may end anywhere, even inside a multi-byte UTF-8 character;
structural characters are ASCII and never occur inside one. Each complete element is decoded with
orjson, which also does the full validation of its contents.

Bounds: one element may take at most ``max_element_bytes``; the whole answer (prose before the
array included) at most ``max_buffer_bytes``, so a runaway stream is cut off.

The array starts at the first ``[`` that an element (or ``]``) follows, so a code fence or prose
before it is skipped; a ``{`` before any ``[`` means the model wrote an object instead of an
array and is an error at once. Recovery: when the first element after such a ``[`` turns out not
to be JSON (``Sure! [not json] ok [...]``), that ``[`` was prose too and scanning resumes, from
where the failure was found, for the next ``[``. Bytes are still read once each, so the work stays
linear and within the same bounds. Bound violations (depth, size) are never recovered from, and
once an element has been returned the array is committed. If no array follows, the error names
the first failed candidate. Prose holding a valid array such as ``[1]`` before the real array would
still be taken for it: with a schema-constrained engine there is no prose at all.
"""

from __future__ import annotations

import re
from typing import NoReturn

import orjson

from aiplanner.errors import ConfigError, ParseError, ResponseTooLarge

__all__ = ["MAX_DEPTH", "JsonArrayStream"]

MAX_DEPTH = 64
"""Deepest nesting allowed inside one element; a plan needs four levels."""

_OPENER = re.compile(rb"[\[{]")
_NON_SPACE = re.compile(rb"[^ \t\r\n]")
_STRUCTURE = re.compile(rb'["{}\[\]]')
_STRING_STOP = re.compile(rb'["\\]')
_SCALAR_END = re.compile(rb"[,\] \t\r\n]")
_NOT_SCALAR = re.compile(rb"[^0-9a-zA-Z+\-.]")
_SCALAR_START = frozenset(b"-0123456789tfn")
_CLOSER_OF = {ord("{"): ord("}"), ord("["): ord("]")}

# Scanner states.
_PREAMBLE = 0  # prose or a code fence before the array
_FIRST = 1  # after '[': an element or ']'
_NEXT = 2  # after ',': an element
_AFTER = 3  # after an element: ',' or ']'
_ELEMENT = 4  # inside an object, array or string element
_SCALAR = 5  # inside a number or literal element
_DONE = 6


class JsonArrayStream:
    """Feed chunks of a JSON array (optionally after prose or a code fence); get elements back.

    Raises :class:`ConfigError` for bounds that are not positive.
    """

    __slots__ = (
        "_abandoned",
        "_buf",
        "_closed",
        "_count",
        "_escape",
        "_failed",
        "_in_string",
        "_max_buffer",
        "_max_element",
        "_offset",
        "_stack",
        "_state",
    )

    def __init__(self, *, max_element_bytes: int = 16384, max_buffer_bytes: int = 262144) -> None:
        if max_element_bytes <= 0 or max_buffer_bytes <= 0:
            raise ConfigError("JsonArrayStream bounds must be positive")
        self._max_element = max_element_bytes
        self._max_buffer = max_buffer_bytes
        self._state = _PREAMBLE
        self._buf = bytearray()  # the current element only
        self._stack = bytearray()  # open brackets of the current element
        self._in_string = False
        self._escape = False
        self._offset = 0  # bytes consumed so far, for messages and the total bound
        self._count = 0
        self._failed: str | None = None
        self._abandoned: str | None = None  # why the first candidate array was given up
        self._closed = False

    @property
    def done(self) -> bool:
        """True once the array's closing ``]`` has been read; later input is ignored."""
        return self._state == _DONE

    @property
    def count(self) -> int:
        """How many elements have been returned so far."""
        return self._count

    def feed(self, chunk: str | bytes) -> list[object]:
        """Scan ``chunk`` and return the elements it completed, in order.

        Raises :class:`ParseError` for malformed input (naming the byte offset), an element larger
        than ``max_element_bytes`` or nested deeper than :data:`MAX_DEPTH`;
        :class:`ResponseTooLarge` when the answer passes ``max_buffer_bytes`` before the array
        closes; :class:`ConfigError` when called after :meth:`close`. After an error the stream
        stays failed: every later call raises :class:`ParseError` again. Elements returned by
        earlier calls stay valid.
        """
        if self._closed:
            raise ConfigError("feed() called after close()")
        if self._failed is not None:
            raise ParseError(f"the stream already failed: {self._failed}")
        if self._state == _DONE:
            return []
        if isinstance(chunk, str):
            try:
                data = chunk.encode()
            except UnicodeEncodeError as exc:
                self._fail(f"text chunk is not encodable as UTF-8: {exc.reason}", b"", 0)
        else:
            data = chunk
        room = self._max_buffer - self._offset
        out: list[object] = []
        self._scan(data[:room] if len(data) > room else data, out)
        if self._state != _DONE and len(data) > room:
            self._failed = f"the answer exceeds {self._max_buffer} bytes"
            raise ResponseTooLarge(f"streamed answer exceeds {self._max_buffer} bytes")
        return out

    def close(self) -> None:
        """End of input. Raises :class:`ParseError` unless the array was closed."""
        self._closed = True
        if self._state == _DONE:
            return
        if self._failed is not None:
            raise ParseError(f"the stream failed: {self._failed}")
        if self._state == _PREAMBLE:
            msg = "no JSON array in the model output"
            if self._abandoned is not None:
                msg += f" (a candidate failed: {self._abandoned})"
        elif self._state == _ELEMENT:
            what = "string" if self._in_string else "element"
            msg = f"the answer ends inside an unterminated {what} (element {self._count})"
        else:
            msg = f"the JSON array never closed (after {self._count} elements)"
        self._failed = msg
        raise ParseError(msg, raw=self._buf[-2000:].decode(errors="replace"))

    # -- scanning ----------------------------------------------------------------------------

    def _scan(self, data: bytes, out: list[object]) -> None:
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state in (_ELEMENT, _SCALAR):
                try:
                    if state == _ELEMENT:
                        i = self._scan_element(data, i, out)
                    else:
                        i = self._scan_scalar(data, i, out)
                except _Abandon as why:
                    i = self._abandon(why)
            elif state == _PREAMBLE:
                m = _OPENER.search(data, i)
                if m is None:
                    i = n
                elif data[m.start()] == ord("{"):
                    self._fail("expected a JSON array, found an object", data, m.start())
                else:
                    self._state = _FIRST
                    i = m.end()
            elif state == _DONE:
                break
            else:
                m = _NON_SPACE.search(data, i)
                i = n if m is None else self._between(data, m.start())
        self._offset += min(i, n)

    def _between(self, data: bytes, j: int) -> int:
        """Handle the non-space byte at ``j`` outside any element; return where to go on."""
        c = data[j]
        state = self._state
        if state == _AFTER:
            if c == ord(","):
                self._state = _NEXT
            elif c == ord("]"):
                self._state = _DONE
            else:
                self._fail(f"expected ',' or ']' after element {self._count}", data, j)
            return j + 1
        if c == ord("]"):
            if state == _NEXT:
                self._fail("trailing comma before ']'", data, j)
            self._state = _DONE
            return j + 1
        if c in _CLOSER_OF:
            self._stack.append(c)
        elif c == ord('"'):
            self._in_string = True
        elif c in _SCALAR_START:
            self._state = _SCALAR
            return j
        elif state == _FIRST:
            # "[" that no element follows was prose ("see [1]"): look for the real array.
            self._state = _PREAMBLE
            return j
        else:
            self._fail(f"unexpected {chr(c)!r} where element {self._count} should start", data, j)
        self._buf.append(c)
        self._state = _ELEMENT
        return j + 1

    def _scan_element(self, data: bytes, i: int, out: list[object]) -> int:
        start, n = i, len(data)
        complete = False
        while i < n:
            if self._escape:
                self._escape = False
                i += 1
            elif self._in_string:
                m = _STRING_STOP.search(data, i)
                if m is None:
                    i = n
                    break
                i = m.end()
                if data[m.start()] == ord("\\"):
                    self._escape = True
                else:
                    self._in_string = False
                    if not self._stack:
                        complete = True
                        break
            else:
                m = _STRUCTURE.search(data, i)
                if m is None:
                    i = n
                    break
                i = m.end()
                c = data[m.start()]
                if c == ord('"'):
                    self._in_string = True
                elif c in _CLOSER_OF:
                    if len(self._stack) >= MAX_DEPTH:
                        msg = f"element {self._count} nests deeper than {MAX_DEPTH}"
                        self._fail(msg, data, i, bound=True)
                    self._stack.append(c)
                else:
                    if _CLOSER_OF[self._stack[-1]] != c:
                        self._fail(f"mismatched {chr(c)!r} in element {self._count}", data, i - 1)
                    self._stack.pop()
                    if not self._stack:
                        complete = True
                        break
        self._take(data, start, i)
        if complete:
            self._emit(out, data, i)
        return i

    def _scan_scalar(self, data: bytes, i: int, out: list[object]) -> int:
        m = _SCALAR_END.search(data, i)
        end = len(data) if m is None else m.start()
        bad = _NOT_SCALAR.search(data, i, end)
        if bad is not None:
            self._fail(f"unexpected {chr(data[bad.start()])!r} in element {self._count}", data, end)
        self._take(data, i, end)
        if m is not None:
            self._emit(out, data, end)  # the delimiter is read again in the _AFTER state
        return end

    def _take(self, data: bytes, start: int, end: int) -> None:
        if len(self._buf) + end - start > self._max_element:
            msg = f"element {self._count} exceeds {self._max_element} bytes"
            self._fail(msg, data, end, bound=True)
        self._buf += data[start:end]

    def _emit(self, out: list[object], data: bytes, pos: int) -> None:
        try:
            value = orjson.loads(self._buf)
        except orjson.JSONDecodeError as exc:
            self._fail(f"element {self._count} is not valid JSON ({exc})", data, pos)
        out.append(value)
        self._count += 1
        self._buf = bytearray()
        self._state = _AFTER

    def _fail(self, message: str, data: bytes, pos: int, *, bound: bool = False) -> NoReturn:
        """Raise :class:`ParseError`, or :class:`_Abandon` for a first element that is not JSON
        (its ``[`` was prose; scanning goes on at ``pos``)."""
        where = self._offset + pos
        if not bound and self._count == 0 and self._state in (_ELEMENT, _SCALAR):
            raise _Abandon(f"{message} at byte {where}", pos)
        self._failed = f"{message} at byte {where}"
        context = bytes(self._buf[-200:]) + data[max(pos - 200, 0) : pos + 200]
        raise ParseError(self._failed, raw=context.decode(errors="replace"))

    def _abandon(self, why: _Abandon) -> int:
        """Forget the candidate array; return where to look for the next ``[``."""
        if self._abandoned is None:
            self._abandoned = why.message
        self._state = _PREAMBLE
        self._buf = bytearray()
        self._stack.clear()
        self._in_string = False
        self._escape = False
        return why.pos


class _Abandon(Exception):  # internal control flow: never escapes the parser
    """The first element of a candidate array is not JSON: the ``[`` was prose."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
