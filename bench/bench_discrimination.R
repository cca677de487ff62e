# Benchmark of the C-index estimators against survival::concordance (one score,
# the yardstick) at growing n, and of the O(n^2) pairwise engine (the complexity
# class of compareC and survcomp) up to where it stays within a time budget.
#
# Usage: Rscript bench/bench_discrimination.R [max_n] [pairwise_budget_seconds]
#   defaults: max_n = 1e6, pairwise budget = 60 s per row.
# Every row runs in a fresh Rscript; "peak_mb" is that process's VmHWM (R itself,
# the simulated data and the computation), "seconds" is elapsed time of the call
# alone and "cpu" its user + system time. Ratios are to the yardstick at the same n.
# Data: two correlated continuous risk scores, exponential event times, about 30%
# events, continuous times.

args <- commandArgs(trailingOnly = TRUE)
max_n <- if (length(args) >= 1) as.numeric(args[1]) else 1e6
budget <- if (length(args) >= 2) as.numeric(args[2]) else 60

rscript <- file.path(R.home("bin"), "Rscript")

child_template <- '
suppressPackageStartupMessages({library(survival); library(deepnomo)})
set.seed(20260101)
n <- %s
x <- rnorm(n)
score1 <- x
score2 <- x + rnorm(n)
t_event <- rexp(n, exp(0.7 * x))
t_cens <- rexp(n, 2.3)
time <- pmin(t_event, t_cens)
event <- as.integer(t_event <= t_cens)
gc()
tm <- system.time(value <- {%s})
hwm <- grep("^VmHWM", readLines("/proc/self/status"), value = TRUE)
cat(sprintf("RESULT %%.4f %%.4f %%.1f %%.10f %%.4f\\n", tm[["elapsed"]], tm[["user.self"]] + tm[["sys.self"]],
            as.numeric(gsub("[^0-9]", "", hwm)) / 1024, value, mean(event)))
'

methods <- list(
  "survival::concordance (yardstick)" =
    "survival::concordance(Surv(time, event) ~ score1, reverse = TRUE)$concordance",
  "c_index harrell" = "c_index(score1, time, event)$estimate",
  "c_index survcomp" = "c_index(score1, time, event, convention = \"survcomp\")$estimate",
  "compare_c_index kang" = "compare_c_index(score1, score2, time, event)$c1",
  "compare_c_index log_t" = "compare_c_index(score1, score2, time, event, method = \"log_t\")$c1",
  "O(n^2) c_index harrell" =
    "deepnomo:::c_index_fit(score1, time, event, \"harrell\", engine = \"pairwise\")$estimate",
  "O(n^2) compare kang" =
    "deepnomo:::kang_fit(score1, score2, time, event, engine = \"pairwise\")$c1",
  "data only (baseline)" = "0"
)
pairwise <- grepl("^O\\(n\\^2\\)", names(methods))

run_row <- function(method, n) {
  code <- sprintf(child_template, format(n, scientific = FALSE), methods[[method]])
  out <- system2(rscript, c("--no-init-file", "-e", shQuote(code)), stdout = TRUE, stderr = TRUE)
  line <- grep("^RESULT", out, value = TRUE)
  if (length(line) != 1L) {
    stop("benchmark row failed: ", method, " n = ", n, "\n", paste(out, collapse = "\n"))
  }
  v <- as.numeric(strsplit(line, " ")[[1]][-1])
  data.frame(n = n, method = method, seconds = v[1], cpu = v[2], peak_mb = v[3], value = v[4],
             event_rate = v[5], stringsAsFactors = FALSE)
}

fast_n <- c(1e4, 1e5, 1e6)
fast_n <- fast_n[fast_n <= max_n]
slow_n <- c(1e3, 3e3, 1e4, 2e4, 5e4)
slow_n <- slow_n[slow_n <= max_n]

rows <- list()
yard <- list()
add_row <- function(method, n) {
  key <- as.character(n)
  if (is.null(yard[[key]])) {
    yard[[key]] <<- run_row("survival::concordance (yardstick)", n)
    rows[[length(rows) + 1]] <<- yard[[key]]
  }
  r <- run_row(method, n)
  rows[[length(rows) + 1]] <<- r
  message(sprintf("%s, n = %g: %.2f s", method, n, r$seconds))
  r
}
for (n in fast_n) {
  for (m in names(methods)[!pairwise & !grepl("yardstick", names(methods))]) add_row(m, n)
}
for (m in names(methods)[pairwise]) {
  last <- NULL
  for (n in slow_n) {
    if (!is.null(last) && last$seconds * (n / last$n)^2 > budget) break
    last <- add_row(m, n)
  }
}

tab <- do.call(rbind, rows)
ys <- do.call(rbind, yard)
tab$ratio <- tab$seconds / ys$seconds[match(tab$n, ys$n)]
tab$cpu_ratio <- tab$cpu / ys$cpu[match(tab$n, ys$n)]
tab[grepl("baseline", tab$method), c("ratio", "cpu_ratio")] <- NA
tab <- tab[order(tab$n, tab$method), c("n", "method", "seconds", "cpu", "peak_mb", "ratio", "cpu_ratio",
                                       "value", "event_rate")]
tab$value <- formatC(tab$value, digits = 10, format = "f")
rownames(tab) <- NULL
options(width = 200)
print(tab, digits = 3, right = FALSE)
