from cnnbench.cli import main

main()
