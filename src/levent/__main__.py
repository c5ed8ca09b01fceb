"""``python -m levent``: the examples (hello, echo), a TCP proxy (proxy), the benchmark suite (bench)
and what a bug report needs (info)."""
import argparse
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own parser: python -m levent bench --help
        from levent.bench.cli import main as bench

        return bench(argv[1:])
    if argv[:1] == ["proxy"]:  # its own parser too: python -m levent proxy --help
        from levent.proxy import main as proxy

        return proxy(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m levent", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, port, text in (("hello", 9995, "libevent's hello-world: greet each connection, close it"),
                             ("echo", 9996, "an echo server on BufferEvents")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        sub.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0: any free port)")
        if name == "echo":
            sub.add_argument("--mode", choices=("events", "bufferevent"), default="events",
                             help="events: an Event per connection with recv_into/send (the fastest); "
                                  "bufferevent: libevent's bufferevent echo")
    commands.add_parser("proxy", help="a TCP proxy: --listen HOST:PORT --upstream HOST:PORT (see proxy --help)")
    commands.add_parser("bench", help="the benchmark suite against asyncio, uvloop and C (see bench --help)")
    commands.add_parser("info", help="levent's and libevent's versions and backends")
    args = parser.parse_args(argv)

    if args.command == "info":
        import levent

        print(f"levent {levent.__version__} ({levent.__file__})")
        print(f"libevent {levent.libevent_version().string}; backends {', '.join(levent.supported_methods())}")
        print(f"Python {sys.version.split()[0]}")
        return 0

    from levent import examples

    if args.command == "echo":
        examples.echo(args.host, args.port, mode=args.mode)
    else:
        examples.hello(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
