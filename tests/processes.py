"""How the tests start processes: app commands forked from a warm app server, two-CPU scripts.

App processes. A fresh `python -m apps.<name>` spends ~6 s importing TensorFlow before it
does anything, and the tests start the apps a dozen times. So an app server, a Python process
that imports TensorFlow and keras_lottery once (and never initializes TensorFlow's
runtime, which fork cannot copy), forks a child per app command instead: the child sets
its argv, working folder, environment and standard streams, runs the app's module as
`__main__` (as `python -m` does) and exits with its status, so each run is still a
process of its own (killable, its own TensorFlow runtime), without the import.
`popen` and `run` send `[sys.executable, "-m", "apps...", ...]` commands there and any
other command to `subprocess`; `fresh=True` or KERAS_LOTTERY_TESTS_FRESH_PROCESSES=1
(every app command) runs a fresh interpreter instead. tests/experiments/test_imp.py's app test stays fresh,
so the apps' cold start is still tested.

Scripts that need two logical CPUs (MirroredStrategy) share one fresh process
(`TWO_CPU_SCRIPTS`). The fixtures are registered in conftest.py.
"""

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

FRESH_PROCESSES_VARIABLE = "KERAS_LOTTERY_TESTS_FRESH_PROCESSES"
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_APP_SERVER = r"""
import atexit
import importlib
import json
import os
import runpy
import select
import socket
import sys
import threading
import traceback

for module in ("keras_lottery", "keras_lottery.experiments.imp", "keras_lottery.experiments.tuning",
               "keras_lottery.export", "keras_lottery.fusion", "keras_lottery.experiments.run_models",
               "keras_lottery.report", "keras_lottery.export.tflite", "absl.app", "absl.flags"):
    try:  # what the apps import; preloading is only a speed-up
        importlib.import_module(module)
    except ImportError:
        pass
listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
listener.bind(sys.argv[1])
listener.listen(16)
print("READY", flush=True)


def run_child(request, streams):
    code = 1
    try:
        for target, stream in enumerate(streams):
            os.dup2(stream, target)
            os.close(stream)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [request["module"], *request["arguments"]]
        sys.path[0] = os.getcwd()  # as for `python -m`
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:  # as the interpreter turns it into an exit status
            if exit.code is None or isinstance(exit.code, int):
                code = exit.code or 0
            else:
                print(exit.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        threading._shutdown()  # an ordinary exit: non-daemon threads, then atexit functions
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


children = {}  # pid -> the connection that asked for it
while True:
    readable, _, _ = select.select([listener, sys.stdin], [], [], 0.01 if children else None)
    if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
        break  # the test session ended
    if listener in readable:
        connection, _ = listener.accept()
        message, streams, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        pid = os.fork()
        if pid == 0:
            listener.close()
            for other in [connection, *children.values()]:
                other.close()
            run_child(json.loads(message), streams)
        for stream in streams:
            os.close(stream)
        connection.send(json.dumps({"pid": pid}).encode())
        children[pid] = connection
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            connection = children.pop(pid)
            try:
                connection.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())
            except OSError:
                pass
            connection.close()
"""


class _AppServer:
    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="keras_lottery_apps_")
        self.path = os.path.join(self.folder, "socket")
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen([sys.executable, "-c", _APP_SERVER, self.path], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, cwd=REPOSITORY)
        self.ready = False

    def connect(self):
        if not self.ready:
            line = self.process.stdout.readline()  # once its imports are done
            if line != b"READY\n":
                self.log.seek(0)
                raise RuntimeError(f"the app server did not start ({FRESH_PROCESSES_VARIABLE}=1 runs apps without "
                                   f"it):\n{self.log.read().decode(errors='replace')[-3000:]}")
            self.ready = True
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        connection.connect(self.path)
        return connection

    def stop(self):
        self.process.kill()  # it keeps no state; its children end on their own
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_SERVER = []  # the session's _AppServer, once started


def _app_server():
    if not _SERVER:
        _SERVER.append(_AppServer())
    return _SERVER[0]


def _stop_app_server():
    while _SERVER:
        _SERVER.pop().stop()


atexit.register(_stop_app_server)


@pytest.fixture(scope="session")
def app_server():
    """Starts the app server at the session's start, when a selected test asks for it with
    `pytestmark = pytest.mark.usefixtures("app_server")`: its imports then overlap other tests.
    `popen` and `run` also start it when needed."""


@pytest.fixture(scope="session", autouse=True)
def _app_server_session(request):
    if not os.environ.get(FRESH_PROCESSES_VARIABLE) and any(
            "app_server" in getattr(item, "fixturenames", ()) for item in request.session.items):
        _app_server()
    yield
    _stop_app_server()


class ForkedProcess:
    """What the tests use of `subprocess.Popen` (pid, poll, wait, kill, returncode) for a run the app server forked."""

    def __init__(self, args, connection):
        self.args = args
        self.returncode = None
        self._connection = connection
        reply = self._receive(60)
        if reply is None:
            raise RuntimeError(f"the app server did not start {args} within 60 s")
        self.pid = reply["pid"]

    def _receive(self, timeout):
        if not select.select([self._connection], [], [], timeout)[0]:
            return None
        message = self._connection.recv(1 << 16)
        if not message:
            raise RuntimeError(f"the app server stopped answering about {self.args}")
        return json.loads(message)

    def poll(self):
        if self.returncode is None and select.select([self._connection], [], [], 0)[0]:
            self.wait(0)
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            reply = self._receive(timeout)
            if reply is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = reply["returncode"]
            self._connection.close()
        return self.returncode

    def kill(self):
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _stream(target, default):
    if target is None:
        return os.dup(default)
    if target == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDWR)
    return os.dup(target.fileno())


def popen(command, cwd=None, env=None, stdout=None, stderr=None, fresh=False):
    """Starts `command` like `subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr)`
    (stdout, stderr: None, subprocess.DEVNULL or a file), an app command in the app server."""
    if fresh or os.environ.get(FRESH_PROCESSES_VARIABLE) or command[:2] != [sys.executable, "-m"] or \
            not command[2].startswith("apps."):
        return subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    request = {"module": command[2], "arguments": list(command[3:]), "cwd": os.path.abspath(cwd or os.getcwd()),
               "env": dict(os.environ if env is None else env)}
    streams = [_stream(subprocess.DEVNULL, 0), _stream(stdout, 1), _stream(stderr, 2)]
    connection = _app_server().connect()
    try:
        socket.send_fds(connection, [json.dumps(request).encode()], streams)
    finally:
        for stream in streams:
            os.close(stream)
    return ForkedProcess(command, connection)


class BackgroundProcess:
    """`command` started now (see `popen`), its result awaited later: started ahead of the test
    that checks it, its start-up and run overlap the tests before that one.

    Output goes to temporary files (a full pipe would stall the command until read).
    `result()` waits for the end, as `subprocess.run(..., capture_output=True, text=True,
    timeout=timeout)` would, the timeout counting from the start.
    """

    def __init__(self, command, timeout=300, **popen_arguments):
        self.command = command
        self._deadline = time.monotonic() + timeout
        self._stdout, self._stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.process = popen(command, stdout=self._stdout, stderr=self._stderr, **popen_arguments)

    def result(self):
        """A `subprocess.CompletedProcess` with text stdout and stderr; past the deadline, kills it and
        raises TimeoutExpired."""
        try:
            self.process.wait(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        output = []
        for file in (self._stdout, self._stderr):
            file.seek(0)
            output.append(file.read().decode(errors="replace"))
        return subprocess.CompletedProcess(self.command, self.process.returncode, *output)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run(command, timeout=300, **popen_arguments):
    """As `subprocess.run(command, capture_output=True, text=True, timeout=timeout, ...)`; app commands
    run in the app server."""
    return BackgroundProcess(command, timeout, **popen_arguments).result()


@contextlib.contextmanager
def early_process(request, test_name, command, **arguments):
    """Yields a `BackgroundProcess` running `command` if `test_name` (of the requesting fixture's
    module) is among the selected tests, else None; stops it when the block ends.

    For module-scoped autouse fixtures: the command starts with the module's first test.
    """
    wanted = any(item.module is request.module and getattr(item, "originalname", item.name) == test_name
                 for item in request.session.items)
    process = BackgroundProcess(command, **arguments) if wanted else None
    try:
        yield process
    finally:
        if process is not None:
            process.stop()


# Scripts that need two logical CPU devices, which must be configured before TensorFlow
# starts: test modules register them here at import (name -> script), and all of them run
# in one fresh Python process, which pays TensorFlow's start-up (~6 s) once for them all.
# A script leaves what it found, JSON-serializable, in a variable named RESULT.
TWO_CPU_SCRIPTS = {}

_TWO_CPU_RUNNER = r'''
import json
import sys
import traceback

import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
for index, (name, script) in enumerate(json.loads(sys.argv[1]).items()):
    # Each script's MirroredStrategy gets its own collective group keys (as TensorFlow's tests
    # do): strategies created afresh in one process would otherwise share them.
    tf.distribute.MirroredStrategy._collective_key_base = 1000 * index
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(script, f"<{name}>", "exec"), namespace)
        outcome = {"result": namespace["RESULT"]}
    except Exception:  # reported to that script's test; the other scripts still run
        outcome = {"error": traceback.format_exc()}
    print("RESULT " + json.dumps({name: outcome}), flush=True)
'''


@pytest.fixture(scope="session", autouse=True)
def _two_cpu_process(request):
    """The process running TWO_CPU_SCRIPTS, started with the session's first test if a selected
    test needs it (its start-up then overlaps the tests before those); None otherwise."""
    if not any("two_cpu_result" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield None
        return
    process = BackgroundProcess([sys.executable, "-c", _TWO_CPU_RUNNER, json.dumps(TWO_CPU_SCRIPTS)], cwd=REPOSITORY)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def two_cpu_result(_two_cpu_process):
    """`two_cpu_result(name)`: the RESULT of the TWO_CPU_SCRIPTS script `name` (all run once, together)."""
    outcomes = {}

    def result(name):
        if not outcomes:
            process = _two_cpu_process.result()
            assert process.returncode == 0, process.stderr[-3000:]
            for line in process.stdout.splitlines():
                if line.startswith("RESULT "):
                    outcomes.update(json.loads(line[len("RESULT "):]))
        assert name in outcomes, f"no result for {name!r}; registered: {sorted(TWO_CPU_SCRIPTS)}"
        assert "error" not in outcomes[name], outcomes[name].get("error")
        return outcomes[name]["result"]

    return result
