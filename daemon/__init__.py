"""facewatch's streaming service and command line. Imports engines, never training.

(Not python-daemon: this package lives in the facewatch repository.)
"""

__version__ = "0.1.0"
