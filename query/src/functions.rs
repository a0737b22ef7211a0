//! SQL functions Tidemark registers in every query session.
//!
//! `date_trunc` replaces DataFusion's own under the same name for one case that time-series
//! queries hit constantly: Tidemark's `time` column is `Timestamp(ns, "UTC")`, and
//! DataFusion truncates a zoned timestamp to the hour or day by converting each value
//! through the time zone, several times slower than the arithmetic a UTC value needs. In UTC
//! (no daylight saving, no offset) second, minute, hour and day all have fixed lengths, so
//! truncation is `t - t.rem_euclid(unit)`. Every other unit, type or zone is passed to
//! DataFusion's implementation unchanged, as are the signature, return field, ordering
//! properties and documentation.

use std::sync::Arc;

use arrow::array::{Array, AsArray, PrimitiveArray};
use arrow::datatypes::{DataType, FieldRef, TimeUnit, TimestampNanosecondType};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// `date_trunc` with a fast path for UTC nanosecond timestamps.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateTrunc {
    inner: Arc<ScalarUDF>,
}

impl DateTrunc {
    /// Wraps DataFusion's `date_trunc`.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            inner: datafusion::functions::datetime::date_trunc(),
        })
    }
}

/// Nanoseconds in a unit that has a fixed length in UTC.
fn fixed_unit_ns(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "second" => 1_000_000_000,
        "minute" => 60_000_000_000,
        "hour" => 3_600_000_000_000,
        "day" => 86_400_000_000_000,
        _ => return None,
    })
}

fn is_utc(tz: Option<&str>) -> bool {
    matches!(tz, None | Some("UTC" | "+00:00" | "Z" | "Etc/UTC" | "+00"))
}

fn truncate(v: i64, unit: i64) -> i64 {
    v - v.rem_euclid(unit)
}

impl ScalarUDFImpl for DateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let unit = match &args.args[..] {
            [
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(u)) | ScalarValue::Utf8View(Some(u))),
                _,
            ] => fixed_unit_ns(u),
            _ => None,
        };
        if let (Some(unit), Some(value)) = (unit, args.args.get(1)) {
            match value {
                ColumnarValue::Array(a) if matches!(a.data_type(), DataType::Timestamp(TimeUnit::Nanosecond, tz) if is_utc(tz.as_deref())) =>
                {
                    let ts = a.as_primitive::<TimestampNanosecondType>();
                    let out: PrimitiveArray<TimestampNanosecondType> = ts
                        .unary(|v| truncate(v, unit))
                        .with_timezone_opt(ts.timezone().map(Arc::<str>::from));
                    return Ok(ColumnarValue::Array(Arc::new(out)));
                }
                ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(v, tz))
                    if is_utc(tz.as_deref()) =>
                {
                    return Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
                        v.map(|v| truncate(v, unit)),
                        tz.clone(),
                    )));
                }
                _ => {}
            }
        }
        self.inner.invoke_with_args(args)
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_like_the_calendar_in_utc() {
        let day = fixed_unit_ns("DAY").unwrap();
        assert_eq!(truncate(0, day), 0);
        assert_eq!(
            truncate(-1, day),
            -day,
            "before 1970 rounds down, not to zero"
        );
        assert_eq!(truncate(day + 5, day), day);
        assert_eq!(fixed_unit_ns("week"), None);
        assert!(is_utc(Some("UTC")) && is_utc(None) && !is_utc(Some("Europe/Paris")));
    }
}
