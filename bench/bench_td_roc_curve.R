# Time-dependent ROC curve points (td_roc_curve) against td_auc at growing n.
# Prints n, seconds for the curve, seconds for td_auc at one time, and the AUC
# difference between the two (the curve's trapezoid area equals td_auc's AUC).
suppressPackageStartupMessages(library(deepnomo))
set.seed(1)
rows <- list()
for (n in c(1e3, 1e4, 1e5, 1e6)) {
  x <- rnorm(n)
  t_event <- rexp(n, 0.02 * exp(0.7 * x))
  t_cens <- runif(n, 10, 120)
  time <- pmin(t_event, t_cens)
  event <- as.integer(t_event <= t_cens)
  t_curve <- system.time(r <- td_roc_curve(x, time, event, 36))[["elapsed"]]
  t_auc <- system.time(a <- as.data.frame(td_auc(x, time, event, times = 36)))[["elapsed"]]
  rows[[length(rows) + 1L]] <- data.frame(n = n, curve_s = t_curve, td_auc_s = t_auc,
                                          auc = r$auc, abs_diff = abs(r$auc - a$auc))
}
print(do.call(rbind, rows), row.names = FALSE, digits = 4)
