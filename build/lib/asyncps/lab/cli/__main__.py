from asyncps.lab.cli.main import entry

entry()
