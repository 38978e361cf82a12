# Run by every Jupyter kernel of the book's environment: `make setup` copies this file to
# .venv/etc/ipython/, binder/postBuild to the Binder image's. It keeps TensorFlow's log lines out of
# notebook outputs: in a kernel TensorFlow sends its Python logger's INFO lines ("Assets written
# to ...") and warnings ("... triggered tf.function retracing") to stdout, unless the root logger
# already has a handler. Other libraries' warnings still show, on stderr.
c = get_config()  # noqa: F821
c.IPKernelApp.exec_lines = [
    "import logging as _logging, os as _os",
    "_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')",
    "_logging.basicConfig(level=_logging.WARNING)",
    "_logging.getLogger('tensorflow').setLevel(_logging.ERROR)",
    "del _logging, _os",
]
