from phylactery.cli import main

main()
