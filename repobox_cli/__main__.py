from repobox_cli.cli import main

main()
