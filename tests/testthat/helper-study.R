# A small simulated study table with known truth: proportional hazards on
# clinical covariates, an imaging phenotype seen through two noisy signatures,
# and a treatment whose effect depends on a predictive phenotype.
simulate_study_table <- function(n_train = 240, n_test = 160, seed = 42) {
  set.seed(seed)
  n <- n_train + n_test
  age <- round(rnorm(n, 45, 10))
  sex <- factor(sample(c("male", "female"), n, TRUE, prob = c(0.7, 0.3)), levels = c("male", "female"))
  ebv <- rbinom(n, 1, 0.4)
  ldh <- rbinom(n, 1, 0.15)
  z_img <- rnorm(n)
  z_pred <- rnorm(n)
  arm <- factor(sample(c("CCRT", "ICT+CCRT"), n, TRUE), levels = c("CCRT", "ICT+CCRT"))
  ict <- as.integer(arm == "ICT+CCRT")
  lp_img <- 0.9 * z_img
  lp <- 0.03 * (age - 45) + 0.6 * ebv + 0.4 * ldh + lp_img + ict * (-0.2 - 0.6 * z_pred)
  t_event <- 60 * (-log(runif(n)) / (0.25 * exp(lp)))^(1 / 1.2)
  t_cens <- runif(n, 30, 110)
  data.frame(
    patient_id = sprintf("P%04d", seq_len(n)),
    cohort = rep(c("train", "test"), c(n_train, n_test)),
    age = age, sex = sex, ebv_dna = ebv, ldh_abnormal = ldh, treatment = arm,
    dfs_time = pmin(t_event, t_cens), dfs_event = as.integer(t_event <= t_cens),
    os_time = pmin(t_event * 1.3, t_cens), os_event = as.integer(t_event * 1.3 <= t_cens),
    sig_dl_a = z_img + rnorm(n, sd = 0.6), sig_dl_b = z_img + rnorm(n, sd = 1.2),
    sig_dl_predictive = z_pred + rnorm(n, sd = 0.3),
    truth_lp_imaging = lp_img, truth_lp = lp,
    stringsAsFactors = FALSE
  )
}

small_design <- function() {
  list(study = "small", endpoint = "dfs", secondary_endpoints = "os",
       cohorts = list(train = "train", test = "test"),
       candidates = c("age", "sex", "ebv_dna", "ldh_abnormal"), selection = "backward",
       signatures = c("sig_dl_a", "sig_dl_b"),
       models = list(clinical = "@selected", dl = "sig_dl_a",
                     combined = c("age", "ebv_dna", "sig_dl_a", "sig_dl_b")),
       reference = "clinical", nomogram = "combined", times = c(36, 60),
       calibration = list(groups = 4, B = 10),
       subgroups = list(by = c("sex", "ebv_dna")),
       treatment_decision = list(treatment = "treatment", prognostic = "sig_dl_a",
                                 predictive = "sig_dl_predictive", covariates = c("age", "ebv_dna")),
       analyses = c("baseline", "univariate", "selection", "nomogram", "calibration", "cutpoint", "km",
                    "td_roc", "subgroups", "treatment_decision"))
}

# Survival at `t` by hand from a coxph fit: exp(-H0(t) exp(lp)), centred.
surv_at <- function(fit, newdata, t) {
  h <- survival::basehaz(fit, centered = TRUE)
  exp(-h$hazard[max(which(h$time <= t))] * exp(stats::predict(fit, newdata = newdata, type = "lp")))
}
