"""Golden cases: outputs of the public Hallo code that our model must reproduce (`cases`: where they are and how to
read them; `run`: one run of our model on a case's inputs; `recipe`: the stand-in weights some cases are made with).

They live in the package, not beside the tests, so that the tests and the benchmarks measure against one loader."""
