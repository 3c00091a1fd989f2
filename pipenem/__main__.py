from pipenem.main import main

main()
