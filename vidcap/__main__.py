from vidcap.cli import entry

entry()
