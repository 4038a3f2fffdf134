import sys

from kerasrnn.errors import cli_main
from kerasrnn.train import main

sys.exit(cli_main(main))
