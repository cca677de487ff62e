library(testthat)
library(deepnomo)
test_check("deepnomo")
