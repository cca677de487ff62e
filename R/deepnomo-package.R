#' deepnomo: validated prognostic nomograms from imaging signatures
#'
#' The R side of deepnomo computes the clinical statistics of imaging-based
#' prognostic studies on a cohort table (see [validate_cohort()]).
#'
#' Conventions: risk scores are oriented so that higher = higher risk; times
#' are in months (a 3-year figure is at 36); anything learned (cutpoints,
#' coefficients, scalings) is fitted on the training cohort and applied,
#' locked, to test cohorts.
#'
#' @keywords internal
#' @useDynLib deepnomo, .registration = TRUE
#' @importFrom Rcpp sourceCpp
"_PACKAGE"
