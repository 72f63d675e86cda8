//! A `POST /v2/query` body (Plausible's Stats API v2 shapes), validated into a [`Plan`].
//! Every problem is a 400 naming it: an unknown metric, dimension, filter operator or
//! order, a combination this version cannot answer, a reversed or too long date range,
//! too many filter values.

use domain::visits::VisitDimension;
use serde::Deserialize;
use serde_json::Value;

/// Values one filter may list.
pub const MAX_FILTER_VALUES: usize = 100;
/// Filter clauses in a whole query, nested ones included.
pub const MAX_FILTER_CLAUSES: usize = 50;
/// Longest filter value.
pub const MAX_FILTER_VALUE_CHARS: usize = 1000;
/// Rows one answer may hold.
pub const MAX_LIMIT: i64 = 10_000;

/// The request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub site_id: String,
    pub metrics: Vec<String>,
    /// `day`, `7d`, `28d`, `30d`, `91d`, `month`, `6mo`, `12mo`, `year`, `all`, or
    /// `["YYYY-MM-DD", "YYYY-MM-DD"]` (first and last local day, inclusive).
    #[schema(value_type = Object)]
    pub date_range: Value,
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// `[operator, dimension, [values]]`, or `["and"|"or", [filters]]`, or `["not", filter]`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub filters: Vec<Value>,
    /// `[[metric or dimension, "asc"|"desc"], ...]`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub order_by: Vec<Value>,
    #[serde(default)]
    pub include: Include,
    #[serde(default)]
    pub pagination: Pagination,
}

#[derive(Debug, Default, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Include {
    /// `meta.total_rows`: rows before pagination.
    #[serde(default)]
    pub total_rows: bool,
    /// `meta.time_labels`: every bucket of the time dimension in the range.
    #[serde(default)]
    pub time_labels: bool,
    /// Accepted for compatibility; Tally has no imported data.
    #[serde(default)]
    pub imports: bool,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    #[serde(default = "default_limit")]
    pub limit: i64,
    #[serde(default)]
    pub offset: i64,
}

impl Default for Pagination {
    fn default() -> Self {
        Self {
            limit: default_limit(),
            offset: 0,
        }
    }
}

fn default_limit() -> i64 {
    MAX_LIMIT
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Visitors,
    Visits,
    Pageviews,
    ViewsPerVisit,
    BounceRate,
    VisitDuration,
    Events,
    Percentage,
    /// Converted visitors over all visitors, in percent (needs goals: an `event:goal`
    /// dimension or filter).
    ConversionRate,
}

impl Metric {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "visitors" => Self::Visitors,
            "visits" => Self::Visits,
            "pageviews" => Self::Pageviews,
            "views_per_visit" => Self::ViewsPerVisit,
            "bounce_rate" => Self::BounceRate,
            "visit_duration" => Self::VisitDuration,
            "events" => Self::Events,
            "percentage" => Self::Percentage,
            "conversion_rate" => Self::ConversionRate,
            "group_conversion_rate" => {
                return Err(format!(
                    "metric {name} is not supported by this version yet"
                ));
            }
            _ => return Err(format!("unknown metric {name:?}")),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeGrain {
    Hour,
    Day,
    Week,
    Month,
}

/// Longest custom property name a dimension may name.
pub const MAX_PROP_KEY_CHARS: usize = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Visit(VisitDimension),
    Time(TimeGrain),
    /// `event:page`: page views per path, from the path rollups.
    Page,
    /// `event:name`: events per name (event type), from the hourly rollups.
    Name,
    /// `event:goal`: conversions per goal of the site.
    Goal,
    /// `event:hostname`: events per host of their page, from the raw events.
    Hostname,
    /// `event:props:<key>`: events per value of a custom property, from the raw events.
    Prop(String),
}

impl Dimension {
    fn parse(name: &str) -> Result<Self, String> {
        if let Some(d) = VisitDimension::from_api_name(name) {
            return Ok(Self::Visit(d));
        }
        Ok(match name {
            "time" | "time:day" => Self::Time(TimeGrain::Day),
            "time:hour" => Self::Time(TimeGrain::Hour),
            "time:week" => Self::Time(TimeGrain::Week),
            "time:month" => Self::Time(TimeGrain::Month),
            "event:page" => Self::Page,
            "event:name" => Self::Name,
            "event:goal" => Self::Goal,
            "event:hostname" => Self::Hostname,
            "time:minute" => {
                return Err(format!(
                    "dimension {name} is not supported by this version yet"
                ));
            }
            n if n.starts_with("event:props:") => {
                let key = &n["event:props:".len()..];
                if key.is_empty() || key.chars().count() > MAX_PROP_KEY_CHARS || key.contains('\0')
                {
                    return Err(format!(
                        "dimension event:props:<key> takes a property name of 1..{MAX_PROP_KEY_CHARS} characters"
                    ));
                }
                Self::Prop(key.to_string())
            }
            _ => return Err(format!("unknown dimension {name:?}")),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Is,
    IsNot,
    Contains,
    ContainsNot,
    Matches,
    MatchesNot,
}

/// A filter tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Leaf {
        operator: Operator,
        dimension: Dimension,
        values: Vec<String>,
        /// Plausible's `{"case_sensitive": false}` modifier (default true).
        case_sensitive: bool,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

impl Filter {
    /// Every dimension the filter reads.
    pub fn dimensions(&self, out: &mut Vec<Dimension>) {
        match self {
            Self::Leaf { dimension, .. } => out.push(dimension.clone()),
            Self::And(fs) | Self::Or(fs) => fs.iter().for_each(|f| f.dimensions(out)),
            Self::Not(f) => f.dimensions(out),
        }
    }

    /// Every regular expression of its `matches` and `matches_not` leaves.
    pub fn patterns<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::Leaf {
                operator: Operator::Matches | Operator::MatchesNot,
                values,
                ..
            } => out.extend(values.iter().map(String::as_str)),
            Self::Leaf { .. } => {}
            Self::And(fs) | Self::Or(fs) => fs.iter().for_each(|f| f.patterns(out)),
            Self::Not(f) => f.patterns(out),
        }
    }
}

/// Parses one filter; `clauses` counts what the whole query has used.
pub fn parse_filter(v: &Value, clauses: &mut usize) -> Result<Filter, String> {
    *clauses += 1;
    if *clauses > MAX_FILTER_CLAUSES {
        return Err(format!(
            "too many filter clauses (at most {MAX_FILTER_CLAUSES})"
        ));
    }
    let parts = v
        .as_array()
        .ok_or_else(|| format!("a filter must be an array, not {v}"))?;
    let op = parts
        .first()
        .and_then(Value::as_str)
        .ok_or("a filter starts with its operator")?;
    match (op, parts.len()) {
        ("and" | "or", 2) => {
            let inner = parts[1]
                .as_array()
                .ok_or_else(|| format!("{op} takes an array of filters"))?;
            if inner.is_empty() {
                return Err(format!("{op} takes at least one filter"));
            }
            let fs = inner
                .iter()
                .map(|f| parse_filter(f, clauses))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "and" {
                Filter::And(fs)
            } else {
                Filter::Or(fs)
            })
        }
        ("not", 2) => Ok(Filter::Not(Box::new(parse_filter(&parts[1], clauses)?))),
        ("and" | "or" | "not", n) => Err(format!(
            "{op} takes one argument, got {}",
            n.saturating_sub(1)
        )),
        (_, 3 | 4) => {
            let operator = match op {
                "is" => Operator::Is,
                "is_not" => Operator::IsNot,
                "contains" => Operator::Contains,
                "contains_not" => Operator::ContainsNot,
                "matches" => Operator::Matches,
                "matches_not" => Operator::MatchesNot,
                _ => return Err(format!("unknown filter operator {op:?}")),
            };
            let name = parts[1]
                .as_str()
                .ok_or("a filter's second element is a dimension name")?;
            let dimension = Dimension::parse(name)?;
            if matches!(dimension, Dimension::Time(_)) {
                return Err(format!(
                    "filters on {name} are not supported; use date_range"
                ));
            }
            let values = parts[2]
                .as_array()
                .ok_or("a filter's third element is an array of values")?;
            if values.is_empty() || values.len() > MAX_FILTER_VALUES {
                return Err(format!(
                    "a filter on {name} lists {} values; between 1 and {MAX_FILTER_VALUES} are allowed",
                    values.len()
                ));
            }
            let values = values
                .iter()
                .map(|v| match v.as_str() {
                    Some(s) if s.contains('\0') => {
                        Err(format!("a filter value on {name} holds a NUL character"))
                    }
                    Some(s) if s.chars().count() <= MAX_FILTER_VALUE_CHARS => Ok(s.to_string()),
                    Some(_) => Err(format!(
                        "a filter value on {name} is over {MAX_FILTER_VALUE_CHARS} characters"
                    )),
                    None => Err(format!("filter values on {name} must be strings, not {v}")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let case_sensitive = match parts.get(3) {
                None => true,
                Some(Value::Object(m)) => match (m.len(), m.get("case_sensitive")) {
                    (1, Some(Value::Bool(b))) => *b,
                    _ => {
                        return Err(format!(
                            "the only filter modifier is {{\"case_sensitive\": true|false}}, not {}",
                            parts[3]
                        ));
                    }
                },
                Some(other) => {
                    return Err(format!(
                        "a filter's fourth element is an object of modifiers, not {other}"
                    ));
                }
            };
            // Patterns are PostgreSQL regular expressions: one it refuses is a 400 then.
            Ok(Filter::Leaf {
                operator,
                dimension,
                values,
                case_sensitive,
            })
        }
        _ => Err(format!("malformed filter {v}")),
    }
}

/// What the answer orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKey {
    Metric(usize),
    Dimension(usize),
}

/// Metrics, dimensions, and what to order by (descending when true).
pub type Lists = (Vec<Metric>, Vec<Dimension>, Vec<(OrderKey, bool)>);

/// Parses `metrics`, `dimensions` and `order_by` against each other.
pub fn parse_lists(req: &QueryRequest) -> Result<Lists, String> {
    if req.metrics.is_empty() {
        return Err("metrics must list at least one metric".into());
    }
    let metrics = req
        .metrics
        .iter()
        .map(|m| Metric::parse(m))
        .collect::<Result<Vec<_>, _>>()?;
    let dimensions = req
        .dimensions
        .iter()
        .map(|d| Dimension::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, d) in dimensions.iter().enumerate() {
        if dimensions[..i].contains(d) {
            return Err(format!("dimension {} is listed twice", req.dimensions[i]));
        }
    }
    if dimensions
        .iter()
        .filter(|d| matches!(d, Dimension::Time(_)))
        .count()
        > 1
    {
        return Err("at most one time dimension".into());
    }
    if metrics.contains(&Metric::Percentage) && dimensions.is_empty() {
        return Err("metric percentage needs a dimension".into());
    }
    let mut order = Vec::with_capacity(req.order_by.len());
    for o in &req.order_by {
        let pair = o.as_array().filter(|a| a.len() == 2);
        let (Some(name), Some(direction)) = (
            pair.and_then(|a| a[0].as_str()),
            pair.and_then(|a| a[1].as_str()),
        ) else {
            return Err(format!(
                "order_by entries are [name, \"asc\"|\"desc\"], not {o}"
            ));
        };
        let desc = match direction {
            "desc" => true,
            "asc" => false,
            _ => {
                return Err(format!(
                    "order direction {direction:?} is neither asc nor desc"
                ));
            }
        };
        let key = if let Some(i) = req.metrics.iter().position(|m| m == name) {
            OrderKey::Metric(i)
        } else if let Some(i) = req.dimensions.iter().position(|d| d == name) {
            OrderKey::Dimension(i)
        } else {
            return Err(format!(
                "order_by names {name:?}, which is not among the query's metrics or dimensions"
            ));
        };
        order.push((key, desc));
    }
    Ok((metrics, dimensions, order))
}
