"""Runs several stage scripts one after another in ONE interpreter (a test helper, see helpers.run_scripts): each as
`python scripts/<name>.py <args>` would (run as __main__, its own argv, stdout and stderr captured, its exit status
from SystemExit), but torch and the package are imported once instead of once per script.

Usage: python tests/script_driver.py JOBS.json RESULTS.json, JOBS a list of [script path, [args...]]."""
import contextlib
import io
import json
import logging
import runpy
import sys
import traceback


def run_one(script: str, args: list[str]) -> dict:
    out, err = io.StringIO(), io.StringIO()
    for handler in list(logging.root.handlers):   # a script's logging.basicConfig binds the stream it sees: fresh
        logging.root.removeHandler(handler)
    sys.argv, sys.path[0] = [script, *args], str(__import__("pathlib").Path(script).resolve().parent)
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            if isinstance(e.code, str):            # sys.exit("message"): printed, status 1, as the interpreter does
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:                      # noqa: BLE001 (an uncaught error: its traceback, status 1)
            traceback.print_exc()
            code = 1
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    spec, dest = sys.argv[1:3]   # before the scripts take sys.argv over
    results = [run_one(script, args) for script, args in json.loads(open(spec).read())]
    with open(dest, "w") as f:
        json.dump(results, f)
