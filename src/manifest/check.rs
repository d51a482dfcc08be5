//! The semantic checks of a parsed manifest: names, ids, `needs`, cycles, one stage per step,
//! inputs, rules, expressions and cron. Every issue found is reported, each at its field.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use crate::manifest::dataset_schema;
use crate::manifest::expr::parse_expr;
use crate::manifest::parse::{Checker, MAX_STEPS};
use crate::manifest::types::{ManifestV1, StageRef, Step, TransformOp, ValidationChecks};
use crate::manifest::yaml::escape_segment;

fn is_slug(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn is_step_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Model, preset and input names: letters, digits, '-', '_' and '.', 1-64.
pub fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses a cron expression the way manifests write it (5 fields, or 6/7 with seconds).
pub fn parse_schedule(expression: &str) -> Result<cron::Schedule, String> {
    let fields = expression.split_whitespace().count();
    let normalized = match fields {
        5 => format!("0 {expression}"),
        6 | 7 => expression.to_string(),
        _ => {
            return Err(format!(
                "a schedule has 5 fields (minute hour day month weekday), got {fields}"
            ));
        }
    };
    cron::Schedule::from_str(&normalized)
        .map_err(|error| format!("invalid cron expression: {error}"))
}

pub(crate) fn check_semantics(spec: &ManifestV1, checker: &mut Checker<'_>) -> Vec<usize> {
    if !is_slug(&spec.metadata.name, 63) {
        checker.push(
            "/metadata/name",
            "name must be 1-63 lowercase letters, digits or '-' (not at either end)",
        );
    }
    for (key, value) in &spec.metadata.labels {
        if key.is_empty() || key.len() > 63 || value.len() > 63 {
            checker.push(
                &format!("/metadata/labels/{}", escape_segment(key)),
                "label keys are 1-63 characters and values at most 63",
            );
        }
    }
    for (alias, input) in &spec.inputs {
        let pointer = format!("/inputs/{}", escape_segment(alias));
        if !is_name(alias) {
            checker.push(
                &pointer,
                "input aliases are 1-64 letters, digits, '-', '_' or '.'",
            );
        }
        if crate::storage::RelativePath::parse(&input.dataset).is_err() {
            checker.push(&format!("{pointer}/dataset"), "not a valid dataset name");
        }
    }
    if let Some(schedule) = &spec.schedule
        && let Err(message) = parse_schedule(schedule)
    {
        checker.push("/schedule", message);
    }
    if spec.steps.is_empty() {
        checker.push("/steps", "a pipeline has at least one step");
    }
    if spec.steps.len() > MAX_STEPS {
        checker.push(
            "/steps",
            format!("a pipeline has at most {MAX_STEPS} steps"),
        );
    }
    let mut ids = BTreeMap::new();
    for (index, step) in spec.steps.iter().enumerate() {
        let pointer = format!("/steps/{index}");
        if !is_step_id(&step.id) {
            checker.push(
                &format!("{pointer}/id"),
                "step ids are 1-40 lowercase letters, digits, '-' or '_'",
            );
        }
        if ids.contains_key(step.id.as_str()) {
            checker.push(
                &format!("{pointer}/id"),
                format!("duplicate step id {:?}", step.id),
            );
        } else {
            ids.insert(step.id.as_str(), index);
        }
    }
    for (index, step) in spec.steps.iter().enumerate() {
        check_step(spec, index, step, &ids, checker);
    }
    topological_order(spec, &ids, checker)
}

fn check_step(
    spec: &ManifestV1,
    index: usize,
    step: &Step,
    ids: &BTreeMap<&str, usize>,
    checker: &mut Checker<'_>,
) {
    let pointer = format!("/steps/{index}");
    for (need_index, need) in step.needs.iter().enumerate() {
        let need_pointer = format!("{pointer}/needs/{need_index}");
        if need == &step.id {
            checker.push(&need_pointer, "a step cannot need itself");
        } else if !ids.contains_key(need.as_str()) {
            checker.push(&need_pointer, format!("no step has id {need:?}"));
        }
    }
    if let Some(timeout) = step.timeout_seconds
        && !(1..=86_400).contains(&timeout)
    {
        checker.push(
            &format!("{pointer}/timeoutSeconds"),
            "must be between 1 and 86400",
        );
    }
    if let Some(attempts) = step.max_attempts
        && !(1..=20).contains(&attempts)
    {
        checker.push(
            &format!("{pointer}/maxAttempts"),
            "must be between 1 and 20",
        );
    }
    if let Some(resources) = &step.resources {
        if let Some(cpu) = resources.cpu
            && !(0.1..=64.0).contains(&cpu)
        {
            checker.push(
                &format!("{pointer}/resources/cpu"),
                "must be between 0.1 and 64",
            );
        }
        if resources.gpu.is_some_and(|gpu| gpu > 1) {
            checker.push(
                &format!("{pointer}/resources/gpu"),
                "a step uses at most 1 GPU",
            );
        }
        if let Some(seconds) = resources.expected_seconds
            && !(seconds.is_finite() && (0.0..=1e6).contains(&seconds))
        {
            checker.push(
                &format!("{pointer}/resources/expectedSeconds"),
                "must be between 0 and 1e6",
            );
        }
    }
    let stages = step.stages();
    if stages.len() != 1 {
        checker.push(
            &pointer,
            format!(
                "a step has exactly one stage (validate, transform, migrate, finetune or score); found {}",
                stages.len()
            ),
        );
        return;
    }
    let stage = stages[0];
    let stage_pointer = format!("{pointer}/{}", stage.kind());
    let input = stage.input();
    let is_need = step.needs.iter().any(|need| need == input);
    let is_alias = spec.inputs.contains_key(input);
    if is_need && is_alias {
        checker.push(
            &format!("{stage_pointer}/input"),
            format!("{input:?} is both an input alias and a needed step; rename one"),
        );
    } else if !is_need && !is_alias {
        let hint = if ids.contains_key(input) {
            format!("step {input:?} must be listed in `needs` to be used as input")
        } else {
            format!("{input:?} is neither an input alias nor a needed step")
        };
        checker.push(&format!("{stage_pointer}/input"), hint);
    }
    match stage {
        StageRef::Validate(validate) => {
            check_checks(&validate.checks(), &stage_pointer, "", checker)
        }
        StageRef::Transform(transform) => {
            check_preset(transform.preset.as_deref(), &stage_pointer, checker);
            check_ops(
                spec,
                &transform.ops,
                &format!("{stage_pointer}/ops"),
                checker,
            );
        }
        StageRef::Migrate(migrate) => {
            match (migrate.sample.rows, migrate.sample.fraction) {
                (Some(0), None) => checker.push(
                    &format!("{stage_pointer}/sample/rows"),
                    "must be at least 1",
                ),
                (Some(_), None) => {}
                (None, Some(fraction)) if fraction > 0.0 && fraction <= 1.0 => {}
                (None, Some(_)) => checker.push(
                    &format!("{stage_pointer}/sample/fraction"),
                    "must be in (0, 1]",
                ),
                _ => checker.push(
                    &format!("{stage_pointer}/sample"),
                    "set exactly one of `rows` or `fraction`",
                ),
            }
            check_checks(&migrate.validate, &stage_pointer, "/validate", checker);
            check_preset(migrate.preset.as_deref(), &stage_pointer, checker);
            check_ops(spec, &migrate.ops, &format!("{stage_pointer}/ops"), checker);
            if let Some(dataset) = &migrate.into_dataset
                && crate::storage::RelativePath::parse(dataset).is_err()
            {
                checker.push(
                    &format!("{stage_pointer}/intoDataset"),
                    "not a valid dataset name",
                );
            }
        }
        StageRef::Finetune(finetune) => {
            if !is_name(&finetune.model) {
                checker.push(
                    &format!("{stage_pointer}/model"),
                    "model names are 1-64 letters, digits, '-', '_' or '.'",
                );
            }
            if let Some(base) = &finetune.base
                && base != crate::model::base::BASE_NAME
                && base != "none"
            {
                checker.push(
                    &format!("{stage_pointer}/base"),
                    "base must be \"ngram\" (the shared base) or \"none\" (train from scratch)",
                );
            }
            if let Err(errors) = crate::model::params::parse_params(&finetune.params) {
                for (key, message) in errors {
                    checker.push(&format!("{stage_pointer}/params/{key}"), &message);
                }
            }
        }
        StageRef::Score(score) => {
            if !is_name(&score.model) {
                checker.push(
                    &format!("{stage_pointer}/model"),
                    "model names are 1-64 letters, digits, '-', '_' or '.'",
                );
            }
            if let Some(version) = &score.version
                && !crate::model::base::is_version(version)
            {
                checker.push(&format!("{stage_pointer}/version"), "versions look like v3");
            }
            if let Some(label) = &score.label
                && !is_name(label)
            {
                checker.push(
                    &format!("{stage_pointer}/label"),
                    "labels are 1-64 letters, digits, '-', '_' or '.'",
                );
            }
            if score
                .partition_rows
                .is_some_and(|rows| !(1..=1_000_000_000).contains(&rows))
            {
                checker.push(
                    &format!("{stage_pointer}/partitionRows"),
                    "partitionRows must be between 1 and 1000000000",
                );
            }
        }
    }
}

fn check_preset(preset: Option<&str>, stage_pointer: &str, checker: &mut Checker<'_>) {
    if let Some(preset) = preset
        && !is_name(preset)
    {
        checker.push(
            &format!("{stage_pointer}/preset"),
            "preset names are 1-64 letters, digits, '-', '_' or '.'",
        );
    }
}

fn check_checks(
    checks: &ValidationChecks,
    stage_pointer: &str,
    prefix: &str,
    checker: &mut Checker<'_>,
) {
    if let Some(schema) = &checks.schema
        && dataset_schema::builtin(schema).is_none()
    {
        checker.push(
            &format!("{stage_pointer}{prefix}/schema"),
            format!(
                "unknown dataset schema {schema:?} (known: {})",
                dataset_schema::names().join(", ")
            ),
        );
    }
    if let Some(rate) = checks.max_error_rate
        && !(0.0..=1.0).contains(&rate)
    {
        checker.push(
            &format!("{stage_pointer}{prefix}/maxErrorRate"),
            "must be between 0 and 1",
        );
    }
    if checks.schema.is_none() && checks.rules.is_empty() {
        checker.push(
            &format!("{stage_pointer}{prefix}"),
            "set a `schema`, `rules` or both",
        );
    }
    for (index, rule) in checks.rules.iter().enumerate() {
        let pointer = format!("{stage_pointer}{prefix}/rules/{index}");
        if rule.column.is_empty() {
            checker.push(&format!("{pointer}/column"), "column names cannot be empty");
        }
        if let (Some(min), Some(max)) = (rule.min, rule.max)
            && min > max
        {
            checker.push(
                &format!("{pointer}/min"),
                format!("min {min} is above max {max}"),
            );
        }
        if let (Some(min), Some(max)) = (rule.min_length, rule.max_length)
            && min > max
        {
            checker.push(
                &format!("{pointer}/minLength"),
                "minLength is above maxLength",
            );
        }
        if let Some(pattern) = &rule.regex
            && let Err(error) = regex::Regex::new(pattern)
        {
            checker.push(
                &format!("{pointer}/regex"),
                format!("invalid regex: {error}"),
            );
        }
    }
}

fn check_ops(spec: &ManifestV1, ops: &[TransformOp], pointer: &str, checker: &mut Checker<'_>) {
    for (index, op) in ops.iter().enumerate() {
        let op_pointer = format!("{pointer}/{index}");
        match op {
            TransformOp::Filter(expression) => {
                if let Err(error) = parse_expr(expression) {
                    checker.push(
                        &format!("{op_pointer}/filter"),
                        format!("invalid expression: {error}"),
                    );
                }
            }
            TransformOp::Derive(derive) => {
                if derive.column.is_empty() {
                    checker.push(
                        &format!("{op_pointer}/derive/column"),
                        "column names cannot be empty",
                    );
                }
                if let Err(error) = parse_expr(&derive.expr) {
                    checker.push(
                        &format!("{op_pointer}/derive/expr"),
                        format!("invalid expression: {error}"),
                    );
                }
            }
            TransformOp::Join(join) => {
                if !spec.inputs.contains_key(&join.input) {
                    checker.push(
                        &format!("{op_pointer}/join/input"),
                        format!("{:?} is not an input alias of this manifest", join.input),
                    );
                }
                if join.on.is_empty() {
                    checker.push(
                        &format!("{op_pointer}/join/on"),
                        "name at least one key column",
                    );
                }
            }
            TransformOp::Select(columns) if columns.is_empty() => {
                checker.push(
                    &format!("{op_pointer}/select"),
                    "select at least one column",
                );
            }
            TransformOp::NormalizeText(normalize) if normalize.columns.is_empty() => {
                checker.push(
                    &format!("{op_pointer}/normalizeText/columns"),
                    "name at least one column",
                );
            }
            TransformOp::FillNull(fills) => {
                for (column, value) in fills {
                    if value.is_null() || value.is_array() || value.is_object() {
                        checker.push(
                            &format!("{op_pointer}/fillNull/{}", escape_segment(column)),
                            "fill values are strings, numbers or booleans",
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// Kahn's algorithm in manifest order; a cycle is reported on the `needs` of its steps.
fn topological_order(
    spec: &ManifestV1,
    ids: &BTreeMap<&str, usize>,
    checker: &mut Checker<'_>,
) -> Vec<usize> {
    let mut remaining: Vec<BTreeSet<usize>> = spec
        .steps
        .iter()
        .map(|step| {
            step.needs
                .iter()
                .filter_map(|need| ids.get(need.as_str()).copied())
                .collect()
        })
        .collect();
    let mut order = Vec::new();
    let mut done = vec![false; spec.steps.len()];
    loop {
        let ready: Vec<usize> = (0..spec.steps.len())
            .filter(|&index| !done[index] && remaining[index].is_empty())
            .collect();
        if ready.is_empty() {
            break;
        }
        for index in ready {
            done[index] = true;
            order.push(index);
            for needs in remaining.iter_mut() {
                needs.remove(&index);
            }
        }
    }
    if order.len() < spec.steps.len() {
        let cycle: Vec<&str> = (0..spec.steps.len())
            .filter(|&index| !done[index])
            .map(|index| spec.steps[index].id.as_str())
            .collect();
        for (index, step) in spec.steps.iter().enumerate() {
            if !done[index] && !step.needs.is_empty() {
                checker.push(
                    &format!("/steps/{index}/needs"),
                    format!("steps {} depend on each other in a cycle", cycle.join(", ")),
                );
                break;
            }
        }
    }
    order
}
