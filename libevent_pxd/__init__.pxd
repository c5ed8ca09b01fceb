# Cython declarations of libevent 2.1's public headers: one .pxd per event2/*.h header, no logic.
