from kerasrnn.train import cli

cli()
