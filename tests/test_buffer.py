"""Buffer (libevent's evbuffer): semantics with real data, the zero-copy rules, misuse and leaks.

Only Buffers that levent owns are tested here; borrowed buffers (a BufferEvent's input and output)
are tested through BufferEvent.
"""
import array
import ctypes
import gc
import io
import os
import random
import socket
import sys
import threading
import weakref

import pytest

import levent
from levent import EOL_ANY, EOL_CRLF, EOL_CRLF_STRICT, EOL_LF, EOL_NUL, Buffer

EXPORTED = "release the memoryview first"
RESERVED = r"commit\(\) or cancel\(\)"


def chained(*pieces):
    """A Buffer whose contents are ``pieces``, one chain each (add_buffer moves chains whole)."""
    buf = Buffer()
    for piece in pieces:
        buf.add_buffer(Buffer(piece))
    return buf


def chains(buf):
    text = repr(buf)
    return int(text.split("chains=")[1].split()[0].rstrip(">"))


def unique_bytes(n=4096):
    """A bytes object nobody else references (not interned, not cached)."""
    return os.urandom(n)


# ---------------------------------------------------------------------------------------------------
# basics


def test_empty_buffer():
    buf = Buffer()
    assert len(buf) == 0
    assert not buf
    assert bytes(buf) == b""
    assert buf.read() == b""
    assert buf.remove(10) == b""
    assert buf.copyout() == b""
    assert buf.readln() is None
    assert buf.pullup() == b""
    assert buf.pullup(1) is None
    assert buf.search(b"x") == -1
    assert buf.drain(5) == 0
    assert repr(buf) == "<Buffer len=0 chains=0>"


def test_initial_data_and_add_any_bytes_like():
    buf = Buffer(b"abc")
    assert bytes(buf) == b"abc"
    buf.add(bytearray(b"de"))
    buf.add(memoryview(b"xfgx")[1:3])
    buf.add(array.array("B", [104, 105]))
    buf.add(Buffer(b"jk"))              # another Buffer, through the buffer protocol
    buf.add(b"")
    assert bytes(buf) == b"abcdefghijk"
    assert len(buf) == 11 and buf


def test_add_rejects_non_bytes_like():
    buf = Buffer()
    for bad in ("text", 5, None, [1, 2], object()):
        with pytest.raises(TypeError, match="bytes-like"):
            buf.add(bad)
        with pytest.raises(TypeError, match="bytes-like"):
            buf.prepend(bad)
    with pytest.raises(TypeError, match="bytes-like"):
        buf.add(memoryview(b"abcdef")[::2])     # not contiguous
    with pytest.raises(TypeError):
        Buffer("text")
    assert len(buf) == 0


def test_prepend():
    buf = Buffer(b"world")
    buf.prepend(b"hello ")
    buf.prepend(bytearray(b">> "))
    assert bytes(buf) == b">> hello world"
    empty = Buffer()
    empty.prepend(b"x")
    assert bytes(empty) == b"x"


def test_add_buffer_moves_chains():
    src = chained(b"one", b"two", b"three")
    assert chains(src) == 3
    dst = Buffer(b"zero")
    dst.add_buffer(src)
    assert bytes(dst) == b"zeroonetwothree"
    assert len(src) == 0 and bytes(src) == b""
    assert chains(dst) == 4       # the three chains were moved, not copied into one
    src.add(b"again")             # the emptied source still works
    assert bytes(src) == b"again"


def test_prepend_buffer_moves_chains():
    src = chained(b"a", b"b")
    dst = Buffer(b"c")
    dst.prepend_buffer(src)
    assert bytes(dst) == b"abc"
    assert len(src) == 0


def test_add_buffer_misuse():
    buf = Buffer(b"x")
    with pytest.raises(ValueError, match="itself"):
        buf.add_buffer(buf)
    with pytest.raises(ValueError, match="itself"):
        buf.prepend_buffer(buf)
    for bad in (b"x", None, bytearray()):
        with pytest.raises(TypeError):
            buf.add_buffer(bad)
        with pytest.raises(TypeError):
            buf.prepend_buffer(bad)
    assert bytes(buf) == b"x"


def test_remove_and_read():
    buf = chained(b"hello ", b"big ", b"world")
    assert buf.remove(3) == b"hel"
    assert buf.read(5) == b"lo bi"        # across a chain boundary
    assert buf.remove(0) == b""
    assert buf.read(100) == b"g world"    # fewer than asked
    assert len(buf) == 0
    buf.add(b"rest")
    assert buf.read() == b"rest"
    assert buf.read(-1) == b""


def test_readinto():
    buf = chained(b"abc", b"defg")
    target = bytearray(5)
    assert buf.readinto(target) == 5
    assert target == b"abcde"
    assert bytes(buf) == b"fg"
    big = bytearray(b"........")
    view = memoryview(big)[2:]
    assert buf.readinto(view) == 2
    assert big == b"..fg...."
    assert buf.readinto(bytearray(3)) == 0
    assert buf.readinto(bytearray()) == 0


def test_readinto_needs_writable():
    buf = Buffer(b"abc")
    for bad in (b"xyz", memoryview(b"xyz"), "str", 3, Buffer(b"xyz")):
        with pytest.raises(TypeError, match="writable"):
            buf.readinto(bad)
    assert bytes(buf) == b"abc"


def test_drain():
    buf = chained(b"abc", b"def")
    assert buf.drain(2) == 2
    assert bytes(buf) == b"cdef"
    assert buf.drain(0) == 0
    assert buf.drain(100) == 4
    assert len(buf) == 0


def test_copyout_is_not_destructive():
    buf = chained(b"0123", b"4567", b"89")
    assert buf.copyout() == b"0123456789"
    assert buf.copyout(3) == b"012"
    assert buf.copyout(3, offset=2) == b"234"
    assert buf.copyout(6, offset=3) == b"345678"     # spans three chains
    assert buf.copyout(-1, offset=7) == b"789"
    assert buf.copyout(100, offset=8) == b"89"
    assert buf.copyout(offset=10) == b""
    assert buf.copyout(offset=50) == b""
    assert buf.copyout(0) == b""
    assert len(buf) == 10 and bytes(buf) == b"0123456789"


def test_pullup():
    buf = chained(b"ab", b"cd", b"ef")
    assert chains(buf) == 3
    assert buf.pullup(3) == b"abc"
    assert buf.pullup(4) == b"abcd"
    assert chains(buf) == 2              # the first four bytes are one block now
    assert buf.pullup(7) is None         # fewer buffered: nothing to pull up
    assert buf.pullup(0) == b""
    assert buf.pullup() == b"abcdef"
    assert chains(buf) == 1
    assert len(buf) == 6                 # pullup keeps the data


def test_expand():
    buf = Buffer(b"abc")
    buf.expand(1 << 16)
    assert bytes(buf) == b"abc"
    buf.expand(0)
    buf.add(b"x" * 1000)
    assert len(buf) == 1003


def test_size_arguments():
    buf = Buffer(b"abc")
    for call in (lambda: buf.remove(-1), lambda: buf.read(-2), lambda: buf.drain(-1),
                 lambda: buf.copyout(-2), lambda: buf.copyout(1, -1), lambda: buf.pullup(-2),
                 lambda: buf.expand(-1), lambda: buf.read_view(-2), lambda: buf.reserve(0),
                 lambda: buf.reserve(-5)):
        with pytest.raises(ValueError):
            call()
    for call in (lambda: buf.remove("1"), lambda: buf.read(1.0), lambda: buf.drain(None),
                 lambda: buf.copyout("x"), lambda: buf.reserve(2.5), lambda: buf.search(b"a", "x")):
        with pytest.raises(TypeError):
            call()
    assert bytes(buf) == b"abc"


def test_repr():
    buf = chained(b"ab", b"c")
    assert repr(buf) == "<Buffer len=3 chains=2>"
    m = memoryview(buf)
    assert repr(buf) == "<Buffer len=3 chains=1 exported=1>"
    m.release()
    buf.freeze(True)
    assert "frozen=front" in repr(buf)
    buf.unfreeze(True)
    handle = buf.add_callback(lambda *a: None)
    assert "callbacks=1" in repr(buf)
    handle.remove()
    with buf.reserve(4):
        assert "reserved" in repr(buf)
    assert repr(Buffer.__new__(Buffer)) == "<Buffer uninitialized>"


def test_uninitialized_and_double_init():
    raw = Buffer.__new__(Buffer)
    with pytest.raises(ValueError, match="not initialized"):
        len(raw)
    with pytest.raises(ValueError, match="not initialized"):
        raw.add(b"x")
    with pytest.raises(ValueError, match="not initialized"):
        memoryview(raw)
    buf = Buffer()
    with pytest.raises(RuntimeError, match="twice"):
        buf.__init__()


def test_helper_classes_cannot_be_made_directly():
    from levent._buffer import BufferCallback, Reservation
    with pytest.raises(TypeError):
        Reservation()
    with pytest.raises(TypeError):
        BufferCallback()


def test_exported_in_package():
    assert levent.Buffer is Buffer
    assert {levent.EOL_ANY, levent.EOL_CRLF, levent.EOL_CRLF_STRICT, levent.EOL_LF,
            levent.EOL_NUL} == {0, 1, 2, 3, 4}
    for name in ("Buffer", "EOL_ANY", "EOL_CRLF", "EOL_CRLF_STRICT", "EOL_LF", "EOL_NUL"):
        assert name in levent.__all__


# ---------------------------------------------------------------------------------------------------
# readln


def lines(buf, eol):
    out = []
    while True:
        line = buf.readln(eol)
        if line is None:
            return out
        out.append(line)


def test_readln_lf():
    buf = Buffer(b"one\ntwo\r\n\nthree")
    assert lines(buf, EOL_LF) == [b"one", b"two\r", b""]
    assert bytes(buf) == b"three"             # no line end yet: stays
    buf.add(b"\n")
    assert buf.readln(EOL_LF) == b"three"


def test_readln_crlf_default():
    buf = Buffer(b"one\r\ntwo\nthree\r\r\nfour\r")
    assert lines(buf, EOL_CRLF) == [b"one", b"two", b"three\r"]
    assert bytes(buf) == b"four\r"
    buf = Buffer(b"a\r\nb\n")
    assert buf.readln() == b"a" and buf.readln() == b"b"     # EOL_CRLF is the default


def test_readln_crlf_strict():
    buf = Buffer(b"one\ntwo\r\nthree\rfour\r\n\r\nfive\n")
    assert lines(buf, EOL_CRLF_STRICT) == [b"one\ntwo", b"three\rfour", b""]
    assert bytes(buf) == b"five\n"


def test_readln_any():
    buf = Buffer(b"one\r\n\r\ntwo\rthree\n\rfour")
    # Any run of CR and LF is one line end.
    assert lines(buf, EOL_ANY) == [b"one", b"two", b"three"]
    assert bytes(buf) == b"four"


def test_readln_nul():
    buf = Buffer(b"one\x00two\n\x00\x00three")
    assert lines(buf, EOL_NUL) == [b"one", b"two\n", b""]
    assert bytes(buf) == b"three"


@pytest.mark.parametrize("eol, sep", [(EOL_LF, b"\n"), (EOL_CRLF, b"\r\n"), (EOL_CRLF_STRICT, b"\r\n"),
                                      (EOL_NUL, b"\x00"), (EOL_ANY, b"\r\n")])
def test_readln_across_chains(eol, sep):
    data = b"first" + sep + b"second line" + sep + b"x" * 300 + sep + b"tail"
    pieces = [data[i:i + 3] for i in range(0, len(data), 3)]      # every line end split somewhere
    buf = chained(*pieces)
    assert chains(buf) == len(pieces)
    assert lines(buf, eol) == [b"first", b"second line", b"x" * 300]
    assert bytes(buf) == b"tail"


def test_readln_crlf_split_between_reads():
    buf = Buffer(b"line\r")
    assert buf.readln(EOL_CRLF_STRICT) is None
    assert buf.readln(EOL_CRLF) is None
    buf.add(b"\nnext")
    assert buf.readln(EOL_CRLF_STRICT) == b"line"
    assert bytes(buf) == b"next"


def test_readln_bad_style():
    buf = Buffer(b"a\n")
    for bad in (5, -1, 100):
        with pytest.raises(ValueError, match="EOL_"):
            buf.readln(bad)
    with pytest.raises(TypeError):
        buf.readln("\n")
    assert bytes(buf) == b"a\n"


# ---------------------------------------------------------------------------------------------------
# search


def test_search_basics():
    buf = chained(b"hello ", b"wor", b"ld hello")
    assert buf.search(b"hello") == 0
    assert buf.search(b"world") == 6            # spans two chains
    assert buf.search(b"hello", 1) == 12
    assert buf.search(b"hello", 1, 16) == -1    # the match must end within end
    assert buf.search(b"hello", 1, 17) == 12
    assert buf.search(b"o w") == 4
    assert buf.search(bytearray(b"ld")) == 9
    assert buf.search(memoryview(b"xyz")) == -1
    assert buf.search(b"hello", -5) == 12
    assert buf.search(b"", 3) == 3
    assert buf.search(b"", 17) == 17
    assert buf.search(b"", 18) == -1
    with pytest.raises(TypeError, match="bytes-like"):
        buf.search("hello")
    assert len(buf) == 17


def test_search_matches_bytes_find():
    rng = random.Random(1234)
    for _ in range(60):
        data = bytes(rng.choice(b"ab\r\n") for _ in range(rng.randrange(0, 60)))
        cut = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randrange(1, 6))))
        pieces = [data[i:j] for i, j in zip([0] + cut, cut + [len(data)]) if j > i]
        buf = chained(*pieces)
        for _ in range(25):
            pattern = bytes(rng.choice(b"ab\r\n") for _ in range(rng.randrange(0, 4)))
            start = rng.choice([None, rng.randrange(-70, 70)])
            end = rng.choice([None, rng.randrange(-70, 70)])
            assert buf.search(pattern, start, end) == data.find(pattern, start, end), \
                (data, pieces, pattern, start, end)
        assert bytes(buf) == data


# ---------------------------------------------------------------------------------------------------
# freeze


def test_freeze_front_and_back():
    buf = Buffer(b"data")
    buf.freeze(True)
    for call in (lambda: buf.drain(1), lambda: buf.read(1), lambda: buf.remove(1),
                 lambda: buf.readln(), lambda: buf.prepend(b"x"), lambda: buf.read_view(1),
                 lambda: buf.readinto(bytearray(2))):
        with pytest.raises(BufferError, match=r"front .* frozen.*unfreeze\(front=True\)"):
            call()
    buf.add(b"!")                      # the back is still open
    assert bytes(buf) == b"data!"      # reading a copy still works
    assert buf.copyout(2, 1) == b"at"
    buf.unfreeze(True)
    buf.freeze(False)
    for call in (lambda: buf.add(b"x"), lambda: buf.add_reference(b"x"), lambda: buf.expand(10),
                 lambda: buf.reserve(4), lambda: buf.add_buffer(Buffer(b"x"))):
        with pytest.raises(BufferError, match=r"back .* frozen.*unfreeze\(front=False\)"):
            call()
    buf.prepend(b">")
    assert buf.read(2) == b">d"
    buf.unfreeze(False)
    buf.add(b"?")
    assert bytes(buf) == b"ata!?"


def test_add_buffer_respects_the_source_front():
    src = Buffer(b"src")
    src.freeze(True)
    dst = Buffer()
    with pytest.raises(BufferError, match="front"):
        dst.add_buffer(src)
    assert bytes(src) == b"src" and len(dst) == 0
    src.unfreeze(True)
    dst.add_buffer(src)
    assert bytes(dst) == b"src"


# ---------------------------------------------------------------------------------------------------
# the buffer protocol


@pytest.fixture
def file_fd(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"file")
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def mutators(buf, fd):
    other = Buffer(b"other")
    return {
        "add": lambda: buf.add(b"x"),
        "prepend": lambda: buf.prepend(b"x"),
        "add_buffer": lambda: buf.add_buffer(other),
        "prepend_buffer": lambda: buf.prepend_buffer(other),
        "add_buffer from": lambda: other.add_buffer(buf),
        "add_reference": lambda: buf.add_reference(b"x"),
        "add_file": lambda: buf.add_file(fd),
        "expand": lambda: buf.expand(10),
        "remove": lambda: buf.remove(1),
        "read": lambda: buf.read(),
        "readinto": lambda: buf.readinto(bytearray(3)),
        "drain": lambda: buf.drain(1),
        "readln": lambda: buf.readln(),
        "read_view": lambda: buf.read_view(),
        "reserve": lambda: buf.reserve(4),
    }


def test_memoryview_is_contiguous_and_read_only():
    buf = chained(b"ab", b"cd", b"ef")
    with memoryview(buf) as m:
        assert m.readonly and m.contiguous and m.format == "B" and m.nbytes == 6
        assert m.tobytes() == b"abcdef"
        assert chains(buf) == 1
        with pytest.raises(TypeError):
            m[0] = 1
    with memoryview(Buffer()) as m:
        assert m.nbytes == 0 and m.tobytes() == b""


def test_writable_export_refused():
    buf = Buffer(b"abc")
    get_buffer = ctypes.pythonapi.PyObject_GetBuffer
    get_buffer.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_int]
    view = ctypes.create_string_buffer(256)         # room for a Py_buffer
    with pytest.raises(BufferError, match="read-only.*reserve"):
        get_buffer(buf, ctypes.addressof(view), 1)  # PyBUF_WRITABLE
    with pytest.raises((TypeError, BufferError), match="read-write|read-only"):
        io.BytesIO(b"xyz").readinto(buf)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"xyz")
        with pytest.raises((TypeError, BufferError)):
            b.recv_into(buf)
    assert bytes(buf) == b"abc"
    buf.add(b"d")       # the failed export left nothing frozen


def test_mutation_while_exported_raises(file_fd):
    buf = chained(b"hello\n", b"world\n")
    fds_before = len(os.listdir("/proc/self/fd"))
    m = memoryview(buf)
    for name, call in mutators(buf, file_fd).items():
        with pytest.raises(BufferError, match=EXPORTED):
            call()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == fds_before      # add_file closed its dup
    # Reads that leave the buffer as it is still work.
    assert len(buf) == 12
    assert bytes(buf) == b"hello\nworld\n"
    assert buf.copyout(5, 6) == b"world"
    assert buf.search(b"world") == 6
    assert buf.pullup(5) == b"hello"
    assert m.tobytes() == b"hello\nworld\n"
    m.release()
    for name, call in mutators(buf, file_fd).items():
        call()          # every one works again


def test_last_export_unfreezes():
    buf = Buffer(b"abcdef")
    m1 = memoryview(buf)
    m2 = memoryview(buf)
    part = m1[2:4]
    m1.release()                       # part still exports through m1's managed buffer
    with pytest.raises(BufferError, match=EXPORTED):
        buf.add(b"x")
    m2.release()
    with pytest.raises(BufferError, match=EXPORTED):
        buf.drain(1)
    assert part.tobytes() == b"cd"
    del part
    buf.add(b"g")
    assert buf.read() == b"abcdefg"


def test_export_keeps_buffer_alive():
    buf = chained(b"abc", b"def")
    ref = weakref.ref(buf)
    m = memoryview(buf)
    del buf
    gc.collect()
    assert ref() is not None
    assert m.tobytes() == b"abcdef"
    m.release()
    gc.collect()
    assert ref() is None


def test_export_restores_user_freeze():
    buf = Buffer(b"abc")
    buf.freeze(True)
    with memoryview(buf):
        pass
    with pytest.raises(BufferError, match="front .* frozen"):
        buf.drain(1)
    buf.add(b"d")                      # the export did not leave the back frozen
    buf.unfreeze(True)
    with memoryview(buf):
        buf.freeze(False)              # freeze/unfreeze while exported take effect on release
        buf.unfreeze(False)
        buf.freeze(True)
    with pytest.raises(BufferError, match="front .* frozen"):
        buf.drain(1)
    buf.add(b"e")
    buf.unfreeze(True)
    assert buf.read() == b"abcde"


def test_adding_itself_is_refused():
    buf = Buffer(b"abc")
    with pytest.raises(BufferError, match=EXPORTED):
        buf.add(buf)
    with pytest.raises(BufferError, match=EXPORTED):
        buf.add(memoryview(buf))
    with pytest.raises(BufferError, match=EXPORTED):
        buf.add_reference(buf)
    with pytest.raises(TypeError, match="read-only"):
        buf.readinto(buf)  # not writable either way
    assert bytes(buf) == b"abc"
    buf.add(b"d")


def test_buffer_as_bytes_like_elsewhere():
    buf = chained(b"abc", b"def")
    assert bytes(memoryview(buf)) == b"abcdef"
    assert b"".join([buf, b"!"]) == b"abcdef!"
    a, b = socket.socketpair()
    with a, b:
        a.sendall(buf)
        assert b.recv(100) == b"abcdef"
    buf.add(b"g")                      # every export above was released


# ---------------------------------------------------------------------------------------------------
# read_view


def test_read_view_moves_the_bytes():
    buf = chained(b"hello ", b"world", b"!")
    v = buf.read_view(8)
    assert isinstance(v, memoryview) and v.readonly and v.contiguous
    assert v.tobytes() == b"hello wo"
    assert bytes(buf) == b"rld!"
    assert buf.read_view(0).tobytes() == b""
    rest = buf.read_view()
    assert rest.tobytes() == b"rld!"
    assert len(buf) == 0
    assert buf.read_view().nbytes == 0
    with pytest.raises(TypeError):
        v[0] = 1


def test_read_view_survives_the_source():
    buf = chained(b"a" * 1000, b"b" * 1000, b"c" * 1000)
    v = buf.read_view(1500)
    part = v[990:1010]
    buf.drain(10)
    buf.add(b"x" * 100000)
    buf.pullup()
    assert v.tobytes() == b"a" * 1000 + b"b" * 500
    ref = weakref.ref(buf)
    del buf
    gc.collect()
    assert ref() is None               # the source is gone; the view does not need it
    assert v.tobytes() == b"a" * 1000 + b"b" * 500
    v.release()
    assert part.tobytes() == b"a" * 10 + b"b" * 10     # a slice keeps the memory too


def test_read_view_while_exported_raises():
    buf = Buffer(b"abc")
    with memoryview(buf):
        with pytest.raises(BufferError, match=EXPORTED):
            buf.read_view(1)
    assert buf.read_view(1).tobytes() == b"a"


# ---------------------------------------------------------------------------------------------------
# add_reference


def test_add_reference_refcount_drain():
    obj = unique_bytes()
    base = sys.getrefcount(obj)
    buf = Buffer(b"head")
    buf.add_reference(obj)
    assert sys.getrefcount(obj) == base + 1
    assert bytes(buf) == b"head" + obj
    buf.drain(100)                      # part of the referenced chain: still referenced
    assert sys.getrefcount(obj) == base + 1
    buf.drain(len(obj) + 4 - 100 - 1)   # all but its last byte
    assert sys.getrefcount(obj) == base + 1
    assert bytes(buf) == obj[-1:]
    buf.drain(1)
    assert sys.getrefcount(obj) == base


def test_add_reference_refcount_remove_and_read():
    obj = unique_bytes()
    base = sys.getrefcount(obj)
    buf = Buffer()
    buf.add_reference(obj)
    assert buf.remove(len(obj)) == obj
    assert sys.getrefcount(obj) == base
    buf.add_reference(obj)
    buf.add_reference(obj)
    assert sys.getrefcount(obj) == base + 2
    assert buf.read() == obj + obj
    assert sys.getrefcount(obj) == base
    buf.add_reference(obj)
    assert buf.readinto(bytearray(len(obj))) == len(obj)
    assert sys.getrefcount(obj) == base
    buf.add_reference(obj + b"\n")      # a new object; obj itself is not referenced
    assert sys.getrefcount(obj) == base


def test_add_reference_refcount_buffer_freed():
    obj = unique_bytes()
    base = sys.getrefcount(obj)
    buf = Buffer()
    buf.add_reference(obj)
    assert sys.getrefcount(obj) == base + 1
    del buf
    assert sys.getrefcount(obj) == base


def test_add_reference_follows_moved_chains():
    obj = unique_bytes()
    base = sys.getrefcount(obj)
    src = Buffer()
    src.add_reference(obj)
    dst = Buffer(b">")
    dst.add_buffer(src)
    del src
    assert sys.getrefcount(obj) == base + 1      # the chain lives on in dst
    assert dst.remove(1) == b">"
    view = dst.read_view()
    assert sys.getrefcount(obj) == base + 1      # now in the view's private memory
    assert view.tobytes() == obj
    del dst
    assert sys.getrefcount(obj) == base + 1
    view.release()
    assert sys.getrefcount(obj) == base


def test_add_reference_released_when_pulled_up():
    obj = unique_bytes()
    base = sys.getrefcount(obj)
    buf = Buffer(b"x")
    buf.add_reference(obj)
    with memoryview(buf) as m:          # two chains: pulled up into a new block, chain dropped
        assert sys.getrefcount(obj) == base
        assert m.tobytes() == b"x" + obj
    single = Buffer()
    single.add_reference(obj)
    with memoryview(single) as m:       # one chain: the view shows obj's own memory
        assert sys.getrefcount(obj) == base + 1
        assert m.tobytes() == obj
    single.drain(len(obj))
    assert sys.getrefcount(obj) == base


def test_finalizer_of_a_referenced_object_may_use_the_buffer():
    # libevent drops the chain while it walks (and frees) the chain list; the object's export is
    # released only after libevent returned, so its finalizer sees a consistent buffer.
    buf = Buffer()
    seen = []
    data = array.array("B", b"referenced")          # an exporter that supports weak references
    weakref.finalize(data, lambda: (seen.append(buf.copyout()), buf.add(b"from finalizer")))
    buf.add_reference(data)
    buf.add_buffer(Buffer(b" tail"))
    del data
    assert seen == []
    buf.drain(len(buf))                             # frees both chains
    assert seen == [b""]
    assert bytes(buf) == b"from finalizer"


def test_add_reference_pins_a_bytearray():
    data = bytearray(b"abc")
    buf = Buffer()
    buf.add_reference(data)
    with pytest.raises(BufferError):
        data.extend(b"def")             # cannot move while libevent points at it
    data[0] = ord("X")                  # in-place changes show in the buffer
    assert bytes(buf) == b"Xbc"
    buf.drain(3)
    data.extend(b"def")
    assert data == b"Xbcdef"


def test_add_reference_refusals_keep_no_reference():
    obj = unique_bytes()
    base = sys.getrefcount(obj)
    buf = Buffer()
    buf.add_reference(b"")
    assert len(buf) == 0
    with pytest.raises(TypeError, match="bytes-like"):
        buf.add_reference("text")
    buf.freeze(False)
    with pytest.raises(BufferError, match="back"):
        buf.add_reference(obj)
    buf.unfreeze(False)
    with memoryview(buf):
        with pytest.raises(BufferError, match=EXPORTED):
            buf.add_reference(obj)
    with buf.reserve(8):
        with pytest.raises(BufferError, match=RESERVED):
            buf.add_reference(obj)
    assert sys.getrefcount(obj) == base
    assert len(buf) == 0


def test_add_reference_of_an_exported_buffer():
    other = Buffer(b"other")
    buf = Buffer()
    buf.add_reference(other)            # holds an export of other: other is frozen meanwhile
    with pytest.raises(BufferError, match=EXPORTED):
        other.add(b"!")
    assert bytes(buf) == b"other"
    buf.read()
    other.add(b"!")
    assert bytes(other) == b"other!"


def test_add_reference_from_threads():
    objs = [unique_bytes(512) for _ in range(8)]
    bases = [sys.getrefcount(o) for o in objs]
    errors = []

    def worker(i):
        try:
            buf = Buffer()
            for _ in range(2000):
                buf.add_reference(objs[i])
                buf.add(b"-")
                assert buf.remove(513) == objs[i] + b"-"
        except BaseException as exc:    # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(objs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [sys.getrefcount(o) for o in objs] == bases


# ---------------------------------------------------------------------------------------------------
# add_file


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    content = bytes(range(256)) * 40 + b"tail"       # 10244 bytes: more than two pages
    path.write_bytes(content)
    return path, content


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_add_file_whole(data_file):
    path, content = data_file
    buf = Buffer(b"<")
    with open(path, "rb") as f:
        buf.add_file(f)
    buf.add(b">")                         # closed our file: levent added a dup of it
    assert bytes(buf) == b"<" + content + b">"
    assert buf.search(b"tail") == len(content) - 4 + 1


def test_add_file_offset_and_length(data_file):
    path, content = data_file
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = Buffer()
        buf.add_file(fd, 5000, 100)        # an offset that is not page aligned
        buf.add_file(fd, 4096, 10)
        buf.add_file(fd, 10000)            # to the end
        buf.add_file(fd, len(content))     # nothing left at the end: adds nothing
        buf.add_file(fd, 0, 0)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0     # our fd's position untouched
    finally:
        os.close(fd)
    assert bytes(buf) == content[5000:5100] + content[4096:4106] + content[10000:]
    assert buf.read(3) == content[5000:5003]
    assert buf.search(content[5050:5060]) == 47
    with memoryview(buf) as m:
        assert m.tobytes() == bytes(buf)


def test_add_file_closes_its_dup(data_file):
    path, content = data_file
    before = open_fds()
    buf = Buffer()
    with open(path, "rb") as f:
        buf.add_file(f, 0, 10)
        buf.add_file(f.fileno(), 10, 10)
    assert open_fds() == before + 2       # libevent's copies, until the data is gone
    buf.drain(15)
    assert open_fds() == before + 1
    assert buf.read() == content[15:20]
    assert open_fds() == before
    with open(path, "rb") as f:
        buf.add_file(f)
    del buf
    assert open_fds() == before


def test_add_file_misuse(data_file, tmp_path):
    path, content = data_file
    buf = Buffer()
    before = open_fds()
    with open(path, "rb") as f:
        with pytest.raises(ValueError, match="past the end"):
            buf.add_file(f, len(content) + 1)
        with pytest.raises(ValueError, match="past the end"):
            buf.add_file(f, 10, len(content))
        with pytest.raises(ValueError, match="offset"):
            buf.add_file(f, -1)
        with pytest.raises(ValueError, match="length"):
            buf.add_file(f, 0, -2)
    with pytest.raises(TypeError, match="fileno"):
        buf.add_file(str(path))
    with pytest.raises(ValueError, match="invalid file descriptor"):
        buf.add_file(-1)
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="regular file"):
            buf.add_file(r)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError):
        buf.add_file(r)                   # closed
    assert open_fds() == before
    assert len(buf) == 0


# ---------------------------------------------------------------------------------------------------
# reserve / commit


def test_reserve_commit():
    buf = Buffer(b"head:")
    with buf.reserve(16) as r:
        assert len(r) == 16 and r.size == 16 and not r.done
        with memoryview(r) as m:
            assert not m.readonly and m.nbytes == 16
            m[:5] = b"hello"
        r.commit(5)
        assert r.committed and r.done
    assert bytes(buf) == b"head:hello"
    with buf.reserve(3) as r:
        with memoryview(r) as m:
            m[:] = b"abc"
        r.commit(3)
    assert bytes(buf) == b"head:helloabc"


def test_reserve_with_recv_into():
    buf = Buffer()
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"ping over a socket")
        with buf.reserve(4096) as r:
            n = b.recv_into(r)             # recv_into releases its export before returning
            r.commit(n)
    assert bytes(buf) == b"ping over a socket"


def test_commit_refused_while_a_view_is_alive():
    buf = Buffer()
    r = buf.reserve(8)
    m = memoryview(r)
    sub = m[2:6]
    m[:] = b"abcdefgh"
    m.release()                           # the sub-view still exports the reservation
    with pytest.raises(BufferError, match=r"release the memoryview first"):
        r.commit(8)
    assert len(buf) == 0
    sub.release()
    r.commit(8)
    assert bytes(buf) == b"abcdefgh"
    with pytest.raises(BufferError, match="committed"):
        memoryview(r)                     # its memory is the buffer's now


def test_changes_refused_while_reserved(file_fd):
    buf = Buffer(b"data\n")
    r = buf.reserve(4)
    for name, call in mutators(buf, file_fd).items():
        with pytest.raises(BufferError, match=RESERVED):
            call()
    with pytest.raises(BufferError, match=RESERVED):
        memoryview(buf)
    with pytest.raises(BufferError, match=RESERVED):
        buf.pullup()
    assert bytes(buf) == b"data\n" and buf.search(b"ta") == 2 and len(buf) == 5
    r.cancel()
    assert r.done and not r.committed
    buf.add(b"more")
    assert bytes(buf) == b"data\nmore"


def test_leaving_the_block_without_commit_cancels():
    buf = Buffer(b"x")
    with buf.reserve(4) as r:
        with memoryview(r) as m:
            m[:2] = b"zz"
    assert r.done and not r.committed
    assert bytes(buf) == b"x"
    buf.add(b"y")
    with pytest.raises(ZeroDivisionError):
        with buf.reserve(4):
            1 / 0
    buf.add(b"z")
    assert bytes(buf) == b"xyz"


def test_cancel_waits_for_views():
    buf = Buffer()
    r = buf.reserve(4)
    m = memoryview(r)
    r.cancel()                            # a view is alive: the buffer stays blocked
    assert not r.done
    with pytest.raises(BufferError, match=RESERVED):
        buf.add(b"x")
    m[:] = b"safe"                        # still the reserved, not yet reused, memory
    m.release()
    assert r.done
    buf.add(b"x")
    assert bytes(buf) == b"x"


def test_dropped_reservation_cancels():
    buf = Buffer()
    buf.reserve(10)
    gc.collect()
    buf.add(b"ok")
    assert bytes(buf) == b"ok"


def test_reservation_misuse():
    buf = Buffer()
    r = buf.reserve(4)
    with pytest.raises(BufferError, match=RESERVED):
        buf.reserve(4)
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="0 to 4"):
            r.commit(bad)
    r.commit(0)                           # nothing added, reservation over
    assert r.done and len(buf) == 0
    with pytest.raises(ValueError, match="already"):
        r.commit(0)
    r.cancel()                            # no-op once done
    buf.add(b"a")
    r2 = buf.reserve(2)
    buf2 = Buffer()
    with pytest.raises(BufferError, match=RESERVED):
        buf2.add_buffer(buf)
    with memoryview(r2) as m:
        m[:] = b"bc"
    buf.freeze(False)
    with pytest.raises(BufferError, match="back"):
        r2.commit(2)                      # refused, still open: unfreeze and commit again
    buf.unfreeze(False)
    r2.commit(2)
    assert bytes(buf) == b"abc"
    with memoryview(buf):
        with pytest.raises(BufferError, match=EXPORTED):
            buf.reserve(1)


# ---------------------------------------------------------------------------------------------------
# change callbacks


def test_callbacks_report_changes():
    buf = Buffer()
    calls = []
    handle = buf.add_callback(lambda b, added, deleted, orig: calls.append((b, added, deleted, orig)))
    assert handle.active and callable(handle.callback)
    buf.add(b"hello")
    buf.drain(2)
    buf.prepend(b"<")
    assert buf.read(2) == b"<l"
    buf.add_reference(b"ref")
    assert calls == [(buf, 5, 0, 0), (buf, 0, 2, 5), (buf, 1, 0, 3), (buf, 0, 2, 4), (buf, 3, 0, 2)]
    del calls[:]
    assert buf.readln(EOL_ANY) is None
    buf.add(b"\r\n")
    assert buf.readln(EOL_ANY) == b"loref"
    assert calls == [(buf, 2, 0, 5), (buf, 0, 7, 7)]
    del calls[:]
    with buf.reserve(4) as r:
        with memoryview(r) as m:
            m[:3] = b"abc"
        assert calls == []
        r.commit(3)
    assert calls == [(buf, 3, 0, 0)]
    handle.remove()
    assert not handle.active and handle.callback is None
    buf.add(b"x")
    assert calls == [(buf, 3, 0, 0)]
    handle.remove()                       # twice: nothing


def test_callbacks_count_prepends_into_new_chains():
    buf = Buffer(b"abc")
    calls = []
    buf.add_callback(lambda b, a, d, o: calls.append((a, d, o, len(b))))
    buf.prepend(b"x" * 1000)         # does not fit before "abc": a new chain
    buf.prepend(b"y" * 5)
    assert calls == [(1000, 0, 3, 1003), (5, 0, 1003, 1008)]


def test_callbacks_on_moves():
    src = Buffer(b"abc")
    dst = Buffer(b"xy")
    seen = []
    src.add_callback(lambda b, a, d, o: seen.append(("src", a, d, o)))
    dst.add_callback(lambda b, a, d, o: seen.append(("dst", a, d, o)))
    dst.add_buffer(src)
    assert sorted(seen) == [("dst", 3, 0, 2), ("src", 0, 3, 3)]
    del seen[:]
    v = dst.read_view(4)
    assert seen == [("dst", 0, 4, 5)] and v.tobytes() == b"xyab"


def test_callbacks_run_in_order_and_nested():
    buf = Buffer()
    order = []

    def first(b, added, deleted, orig):
        order.append(("first", added, deleted))
        if added and len(b) > 3:
            b.drain(len(b))               # a change from a callback: callbacks run again, nested

    buf.add_callback(first)
    buf.add_callback(lambda b, a, d, o: order.append(("second", a, d)))
    buf.add(b"ab")
    buf.add(b"cd")
    assert len(buf) == 0
    assert order == [("first", 2, 0), ("second", 2, 0),
                     ("first", 2, 0), ("first", 0, 4), ("second", 0, 4), ("second", 2, 0)]


def test_callback_removing_callbacks_while_called():
    buf = Buffer()
    calls = []
    handles = {}

    def remover(b, *info):
        calls.append("remover")
        handles["victim"].remove()        # another callback, not yet called for this change
        handles["remover"].remove()       # and itself

    handles["remover"] = buf.add_callback(remover)
    handles["victim"] = buf.add_callback(lambda *a: calls.append("victim"))
    buf.add(b"x")
    assert calls == ["remover"]
    buf.add(b"y")
    assert calls == ["remover"]
    again = buf.add_callback(lambda *a: calls.append("again"))   # re-enabled after all were removed
    buf.add(b"z")
    assert calls == ["remover", "again"]
    again.remove()


def test_callback_adding_a_callback_while_called():
    buf = Buffer()
    calls = []

    def adder(b, *info):
        calls.append("adder")
        if len(calls) == 1:
            b.add_callback(lambda *a: calls.append("late"))

    buf.add_callback(adder)
    buf.add(b"1")                          # the new callback starts with the next change
    buf.add(b"2")
    assert calls == ["adder", "adder", "late"]


def test_callback_exception_is_raised_from_the_method():
    buf = Buffer()

    def boom(b, added, deleted, orig):
        if 3 in (added, deleted):
            raise KeyError("from the callback")

    buf.add_callback(boom)
    with pytest.raises(KeyError, match="from the callback"):
        buf.add(b"abc")
    assert bytes(buf) == b"abc"           # the change happened first
    buf.add(b"de")                        # not raised again
    with pytest.raises(KeyError):
        buf.read_view(3)                  # the view is lost with the exception; the bytes left
    assert bytes(buf) == b"de"


def test_two_failing_callbacks_chain():
    buf = Buffer()

    def one(*a):
        raise ValueError("one")

    def two(*a):
        raise RuntimeError("two")

    buf.add_callback(one)
    buf.add_callback(two)
    with pytest.raises(RuntimeError, match="two") as info:
        buf.add(b"x")
    assert isinstance(info.value.__context__, ValueError)


def test_callback_exception_from_nested_change():
    buf = Buffer()
    state = {"n": 0}

    def cb(b, added, deleted, orig):
        state["n"] += 1
        if added:
            b.drain(1)                    # the drain's callback raises inside this callback
        else:
            raise OSError("nested")

    buf.add_callback(cb)
    with pytest.raises(OSError, match="nested"):
        buf.add(b"ab")
    assert bytes(buf) == b"b"


def test_keyboard_interrupt_in_a_callback():
    buf = Buffer()

    def cb(*a):
        raise KeyboardInterrupt

    buf.add_callback(cb)
    with pytest.raises(KeyboardInterrupt):
        buf.add(b"x")


def test_add_callback_misuse():
    buf = Buffer()
    with pytest.raises(TypeError, match="callable"):
        buf.add_callback(None)
    with pytest.raises(TypeError, match="callable"):
        buf.add_callback(b"x")


def test_callback_cycle_is_collected():
    buf = Buffer()
    ref = weakref.ref(buf)

    def cb(b, *info):
        buf.copyout()                      # the closure references the buffer: a cycle

    handle = buf.add_callback(cb)
    buf.add(b"x")
    del buf, cb, handle
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------------------------------------------
# threads


def test_shared_buffer_from_threads():
    buf = Buffer()
    n_threads, n_records = 6, 3000
    errors = []

    def writer(i):
        try:
            record = bytes([65 + i]) * 7 + b"\n"
            for _ in range(n_records):
                buf.add(record)
        except BaseException as exc:    # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(buf) == n_threads * n_records * 8
    counts = {}
    while True:
        line = buf.readln(EOL_LF)
        if line is None:
            break
        assert len(line) == 7 and len(set(line)) == 1     # every record added whole
        counts[line] = counts.get(line, 0) + 1
    assert sorted(counts.values()) == [n_records] * n_threads


# ---------------------------------------------------------------------------------------------------
# leaks

N = 100_000
MAX_RSS_GROWTH_KIB = 4 * 1024
MAX_OBJECT_GROWTH = 1000


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    pytest.skip("no VmRSS in /proc/self/status")


def run_flat(cycle, n=N, *watched):
    """Run cycle() n times after a warm-up; RSS, GC objects and the watched refcounts stay flat."""
    for _ in range(max(n // 10, 1)):
        cycle()
    gc.collect()
    rss0, objs0 = rss_kib(), len(gc.get_objects())
    refs0 = [sys.getrefcount(w) for w in watched]
    for _ in range(n):
        cycle()
    gc.collect()
    rss1, objs1 = rss_kib(), len(gc.get_objects())
    assert [sys.getrefcount(w) for w in watched] == refs0
    assert objs1 - objs0 < MAX_OBJECT_GROWTH, (objs0, objs1)
    assert rss1 - rss0 < MAX_RSS_GROWTH_KIB, f"RSS grew {rss1 - rss0} KiB ({rss0} -> {rss1})"


def test_add_remove_cycles_do_not_leak():
    buf = Buffer()
    payload = b"x" * 300
    other = Buffer()

    def cycle():
        buf.add(payload)
        buf.prepend(b"<")
        other.add(payload)
        buf.add_buffer(other)
        buf.readln(EOL_LF)
        assert len(buf.remove(601)) == 601
        buf.drain(len(buf))

    run_flat(cycle, N, payload)


def test_new_buffers_do_not_leak():
    payload = os.urandom(100)

    def cycle():
        b = Buffer(payload)
        b.add_reference(payload)
        b.add_callback(lambda *a: None)
        b.add(b"more")

    run_flat(cycle, N, payload)


def test_zero_copy_cycles_do_not_leak():
    buf = Buffer()
    payload = os.urandom(256)
    target = bytearray(256)

    def cycle():
        buf.add_reference(payload)
        buf.add(payload)
        with memoryview(buf) as m:
            assert m[0] == payload[0]
        v = buf.read_view(256)
        v.release()
        with buf.reserve(64) as r:
            with memoryview(r) as m:
                m[:4] = b"abcd"
            r.commit(4)
        buf.readinto(target)
        buf.drain(len(buf))

    run_flat(cycle, N, payload)


def test_add_file_cycles_do_not_leak(data_file):
    path, content = data_file
    fds = open_fds()
    buf = Buffer()
    with open(path, "rb") as f:
        def cycle():
            buf.add_file(f, 100, 1000)
            assert len(buf.read_view(500)) == 500
            buf.drain(500)

        run_flat(cycle, 10_000, f)
    assert open_fds() == fds
