from lab.cli.main import entry

entry()
