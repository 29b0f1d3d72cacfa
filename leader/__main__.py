from leader.cli import main

main()
