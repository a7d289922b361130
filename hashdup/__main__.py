from hashdup.cli import main

main()
