from gendertool.cli import main

main()
