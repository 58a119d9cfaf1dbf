//! Counts and percents, and the rounding rules that turn them into pods.
//!
//! # Rounding, exactly
//! - A percent of N pods rounds **up** (`ceil(p * N / 100)`), so a non-zero
//!   percent never gives 0 pods; the result never exceeds N.
//! - A count is capped at N.
//! - A percent used as an allowance (failureThreshold, maxSurge) rounds
//!   **down** for failureThreshold (fewer unready pods tolerated) and **up**
//!   for maxSurge (as Kubernetes rounds maxSurge).

use crate::{spec::Quantity, validate::FieldProblem};

/// A validated count or percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amount {
    /// An absolute number of pods.
    Count(u32),
    /// A percent of some total, 0 to 100.
    Percent(u32),
}

impl Amount {
    /// Pods for a total of `n`, rounding a percent up and capping at `n`.
    pub fn pods_ceil(self, n: u32) -> u32 {
        match self {
            Self::Count(c) => c.min(n),
            Self::Percent(p) => (u64::from(p) * u64::from(n))
                .div_ceil(100)
                .min(u64::from(n)) as u32,
        }
    }

    /// Pods for a total of `n`, rounding a percent down and capping at `n`.
    pub fn pods_floor(self, n: u32) -> u32 {
        match self {
            Self::Count(c) => c.min(n),
            Self::Percent(p) => (u64::from(p) * u64::from(n) / 100).min(u64::from(n)) as u32,
        }
    }

    /// Parses a quantity, naming `field` and the value in any problem.
    ///
    /// # Errors
    /// A [`FieldProblem`] for text that is neither a count nor a percent, a
    /// negative number, or a percent above 100.
    pub fn parse(field: &str, quantity: &Quantity) -> Result<Self, FieldProblem> {
        Self::read(quantity).map_err(|why| FieldProblem::new(field, why))
    }

    /// Parses a quantity; the error says what is wrong, naming the value.
    ///
    /// # Errors
    /// As [`Amount::parse`], without the field.
    pub fn read(quantity: &Quantity) -> Result<Self, String> {
        let shown = || match quantity {
            Quantity::Number(n) => n.to_string(),
            Quantity::Text(t) => format!("{t:?}"),
        };
        let bad = |why: &str| format!("{why}, got {}", shown());
        match quantity {
            Quantity::Number(n) => u32::try_from(*n)
                .map(Self::Count)
                .map_err(|_| bad("must be a count of 0 or more")),
            Quantity::Text(text) => {
                let text = text.trim();
                if let Some(percent) = text.strip_suffix('%') {
                    let value: u32 = percent
                        .trim()
                        .parse()
                        .map_err(|_| bad("must be a whole percent such as \"20%\""))?;
                    if value > 100 {
                        return Err(format!("must be between 0% and 100%, got {text}"));
                    }
                    Ok(Self::Percent(value))
                } else {
                    text.parse()
                        .map(Self::Count)
                        .map_err(|_| bad("must be a count such as 3 or a percent such as \"20%\""))
                }
            }
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(c) => write!(f, "{c}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonzero_percent_never_rounds_to_zero_pods() {
        assert_eq!(Amount::Percent(1).pods_ceil(10), 1);
        assert_eq!(Amount::Percent(1).pods_ceil(1), 1);
        assert_eq!(Amount::Percent(0).pods_ceil(10), 0);
    }

    #[test]
    fn percents_round_up_and_counts_are_capped() {
        assert_eq!(Amount::Percent(25).pods_ceil(10), 3);
        assert_eq!(Amount::Percent(25).pods_floor(10), 2);
        assert_eq!(Amount::Percent(100).pods_ceil(7), 7);
        assert_eq!(Amount::Count(12).pods_ceil(10), 10);
        assert_eq!(Amount::Percent(50).pods_ceil(0), 0);
    }

    #[test]
    fn quantities_parse_as_counts_or_percents() {
        let parse = |q: Quantity| Amount::parse("f", &q);
        assert_eq!(parse(Quantity::Number(3)), Ok(Amount::Count(3)));
        assert_eq!(parse("3".into()), Ok(Amount::Count(3)));
        assert_eq!(parse("20%".into()), Ok(Amount::Percent(20)));
        assert_eq!(parse(" 20 % ".into()), Ok(Amount::Percent(20)));
    }

    #[test]
    fn bad_quantities_name_the_field_and_value() {
        let problem = |q: Quantity| {
            Amount::parse("steps[0].replicas", &q)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            problem(Quantity::Number(-1)),
            "steps[0].replicas: must be a count of 0 or more, got -1"
        );
        assert_eq!(
            problem("120%".into()),
            "steps[0].replicas: must be between 0% and 100%, got 120%"
        );
        assert_eq!(
            problem("12.5%".into()),
            "steps[0].replicas: must be a whole percent such as \"20%\", got \"12.5%\""
        );
        assert_eq!(
            problem("half".into()),
            "steps[0].replicas: must be a count such as 3 or a percent such as \"20%\", got \"half\""
        );
    }
}
