"""Run the segapp web demo: `python demo/app.py [--model NAME] [--checkpoint PATH] [--host H] [--port P] [--share]`.

The same as `segapp demo ...` (see demo/README.md).
"""
import sys

from segapp.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
