# The native transports keep their core (a cdef class) in a writable Python attribute, ``_core``:
# checked before each cast, so a wrong object there is a TypeError, never a crash. Inline here so that
# every module gets them without a call across modules on the transports' hot paths.

cdef inline object checked_core(obj, type cls):
    core = obj._core
    if type(core) is not cls:
        raise TypeError(f"{type(obj).__name__}._core must be its {cls.__name__}, not {core!r}")
    return core


cdef inline object core_or_none(obj, type cls):
    # For __repr__ and __del__, which also see a transport whose __init__ failed (no _core yet).
    core = getattr(obj, '_core', None)
    return core if type(core) is cls else None
