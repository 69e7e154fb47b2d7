# The two set-up commands of the README. Both install what they need from this repository's files.
.PHONY: run test demo stack-stop

run:   ## start the local real stack and the whole pipeline, with demo traffic
	bash deploy/local/run.sh

test:  ## install, lint, type-check, start the local real stack, run all tests
	bash deploy/local/test.sh

stack-stop:
	.venv/bin/inferlog stack stop
