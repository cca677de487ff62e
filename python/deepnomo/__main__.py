from deepnomo.cli import main

main()
