from repobox_cli.entry import main

main()
