# A warm slot of the execute service, run as `python -c BOOTSTRAP READY`: CPython is initialised
# and the modules snippets usually need are imported before the request comes; then the file
# READY is made. The request is stdin's first
# line, JSON {"script", "args", "env", "code"}, then `code` bytes of the script; the rest of
# stdin is the script's own. The script runs as __main__, as `python SCRIPT` would run it.
import sys, os, json, re, math, datetime, collections, linecache, traceback, types


def _serve():
    open(sys.argv[1], "w").close()
    stdin = sys.stdin.buffer
    header = stdin.readline()
    if not header:
        sys.stderr.write("warm slot: no request on stdin\n")
        return 2
    request = json.loads(header)
    script = request["script"]
    source = stdin.read(request["code"]).decode("utf-8", "surrogateescape")
    sys.argv[:] = [script] + request["args"]
    sys.path[0] = os.path.dirname(script)
    os.environ.update(request["env"])
    # Tracebacks show the script's lines, as if it were read from its file.
    linecache.cache[script] = (len(source), None, source.splitlines(True), script)
    main = types.ModuleType("__main__")
    main.__file__ = script
    sys.modules["__main__"] = main
    try:
        exec(compile(source, script, "exec"), main.__dict__)
    except SystemExit as e:
        # As Python ends on SystemExit: None is 0, an int is the code, anything else is printed.
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException as e:
        # Printed without this bootstrap's frame, as Python prints the script's own error.
        if not isinstance(e, SyntaxError):
            e.__traceback__ = e.__traceback__.tb_next
        traceback.print_exception(e, limit=0 if isinstance(e, SyntaxError) else None)
        return 1
    return 0


def _exit(code):
    # What the interpreter's finalisation does that a script can see (atexit handlers, the
    # streams flushed), and no more: the container ends with the process.
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


_exit(_serve())
