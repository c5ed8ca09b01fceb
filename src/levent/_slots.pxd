# The native transports keep their core (a cdef class) in a writable Python attribute, ``_core``:
# checked before each cast, so a wrong object there is a TypeError, never a crash. Inline here so that
# every module gets them without a call across modules on the transports' hot paths.

from cpython.object cimport PyObject

cdef extern from *:
    """
    #include <structmember.h>
    /* What obj._core reads when that is a plain __slots__ member of obj's class (looked up as the
       generic getattr would, through the type's method cache, and remembered for the last class
       below), with no attribute machinery, which every transport method call would otherwise pay.
       NULL (no exception set) unless it holds an instance of exactly cls; also when the lookup
       finds anything else (a property, a __getattribute__ override): the caller then takes the
       attribute the usual way. Borrowed. */
    static PyObject *levent_core_slot = NULL;
    /* The last class the lookup below succeeded for, with its version tag then and the offset it
       found. CPython gives a class a new tag (never reused) whenever it or a base changes, so a
       class with the same tag has the same _core; the reference keeps the class from being freed
       and its address reused. 3.13 no longer sets Py_TPFLAGS_VALID_VERSION_TAG; before 3.12 a
       changed class keeps its old tag until looked up again, with the flag cleared. */
    static PyTypeObject *levent_core_class = NULL;
    static unsigned int levent_core_class_tag = 0;
    static Py_ssize_t levent_core_offset = 0;
    #if PY_VERSION_HEX >= 0x030D0000
    #define levent_tag_valid(tp) ((tp)->tp_version_tag != 0)
    #else
    #define levent_tag_valid(tp) ((tp)->tp_version_tag != 0 && PyType_HasFeature((tp), Py_TPFLAGS_VALID_VERSION_TAG))
    #endif
    static inline PyObject *levent_read_core_slot(PyObject *obj, PyTypeObject *cls) {
        PyTypeObject *tp = Py_TYPE(obj);
        PyObject *descr;
        PyMemberDef *member;
        PyObject *core;
        PyTypeObject *previous;
        Py_ssize_t offset;
        if (tp == levent_core_class && tp->tp_version_tag == levent_core_class_tag && levent_tag_valid(tp)) {
            core = *(PyObject **)((char *)obj + levent_core_offset);
            return core != NULL && Py_TYPE(core) == cls ? core : NULL;
        }
        if (tp->tp_getattro != PyObject_GenericGetAttr)
            return NULL;
        if (levent_core_slot == NULL) {
            levent_core_slot = PyUnicode_InternFromString("_core");
            if (levent_core_slot == NULL) {
                PyErr_Clear();
                return NULL;
            }
        }
        descr = _PyType_Lookup(tp, levent_core_slot);
        if (descr == NULL || Py_TYPE(descr) != &PyMemberDescr_Type)
            return NULL;
        /* The offset is one of the descriptor's own class: a descriptor copied into an unrelated
           class would read past the object (the getattr raises TypeError there). */
        if (!PyObject_TypeCheck(obj, ((PyDescrObject *)descr)->d_type))
            return NULL;
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX)
            return NULL;
    #ifdef Py_RELATIVE_OFFSET
        if (member->flags & Py_RELATIVE_OFFSET)
            return NULL;
    #endif
        offset = member->offset;
        if (levent_tag_valid(tp)) {     /* _PyType_Lookup has tagged it, unless tags ran out */
            /* Recorded before the old class goes: its deallocation may run code that changes
               tp (a new tag then misses this entry) or obj's slot (read after it). */
            previous = levent_core_class;
            Py_INCREF(tp);
            levent_core_class = tp;
            levent_core_class_tag = tp->tp_version_tag;
            levent_core_offset = offset;
            Py_XDECREF(previous);
        }
        core = *(PyObject **)((char *)obj + offset);
        return core != NULL && Py_TYPE(core) == cls ? core : NULL;
    }
    """
    PyObject *levent_read_core_slot(object obj, type cls)


cdef inline object checked_core(obj, type cls):
    cdef PyObject *fast = levent_read_core_slot(obj, cls)
    if fast is not NULL:
        return <object>fast
    core = obj._core
    if type(core) is not cls:
        raise TypeError(f"{type(obj).__name__}._core must be its {cls.__name__}, not {core!r}")
    return core


cdef inline object core_or_none(obj, type cls):
    # For __repr__ and __del__, which also see a transport whose __init__ failed (no _core yet).
    core = getattr(obj, '_core', None)
    return core if type(core) is cls else None
