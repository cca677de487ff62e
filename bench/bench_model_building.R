# Timing of the model-building functions at study size (multiscale training
# cohort: 132 patients; a 200-feature table; 100 x 3-fold CV; B = 200).
# Run: R_LIBS=<lib> Rscript bench/bench_model_building.R
suppressPackageStartupMessages(library(deepnomo))
simulate <- function(n, p, seed) {
  set.seed(seed)
  x <- matrix(rnorm(n * p), n, p, dimnames = list(NULL, sprintf("f%03d", seq_len(p))))
  lp <- x[, 1] - 0.8 * x[, 2] + 0.6 * x[, 3]
  t <- rexp(n, 0.01 * exp(lp))
  cens <- runif(n, 20, 100)
  ids <- sprintf("p%03d", seq_len(n))
  list(features = data.frame(patient_id = ids, x),
       reader2 = data.frame(patient_id = ids, x + rnorm(n * p, sd = 0.2)),
       data = data.frame(patient_id = ids, os_time = pmin(t, cens),
                         os_event = as.integer(t <= cens)))
}
timed <- function(label, expr) {
  t0 <- proc.time()[["elapsed"]]
  force(expr)
  data.frame(step = label, seconds = round(proc.time()[["elapsed"]] - t0, 2))
}
s <- simulate(132, 200, 1)
pbc <- survival::pbc[1:312, ]
pbc$os_time <- pbc$time / 30.44
pbc$os_event <- as.integer(pbc$status == 2)
pbc$edema <- factor(pbc$edema)
pbc$sex <- factor(pbc$sex)
cands <- c("age", "sex", "bili", "albumin", "edema", "protime", "copper", "ast", "platelet")
out <- rbind(
  timed("radiomic_signature 132 x 200, ICC, 100 x 3-fold", {
    sig <- radiomic_signature(s$features, s$data, "os", reader2 = s$reader2, repeats = 100)
  }),
  timed("baseline_table pbc, 9 variables", baseline_table(pbc, "trt", cands)),
  timed("select_cox pbc backward, 9 candidates", {
    sel <- suppressMessages(select_cox(pbc, "os", cands, method = "backward"))
  }),
  timed("select_cox pbc both, 9 candidates",
        suppressMessages(select_cox(pbc, "os", cands, method = "both"))),
  timed("build_nomogram + nomogram_score (306 patients)",
        nomogram_score(build_nomogram(sel), sel$data)),
  timed("calibration_test B = 200", suppressMessages(calibration_test(sel, sel$data, 60, B = 200)))
)
print(out, row.names = FALSE)
cat(sprintf("signature: %s (mean CV C = %.3f)\n", paste(names(sig$coefficients), collapse = ", "),
            sig$mean_cv_c_index))
