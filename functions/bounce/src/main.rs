//! The bounce stage as an SQS-triggered Lambda function: a thin wrapper over
//! [`baton_functions::Function`], which reports partial batch failures.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use baton_functions::{Function, Stage, check_lambda_env};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let function = Function::from_env(Stage::Bounce).await?;
    // Configuration errors first; then, before the runtime client would panic on them,
    // the variables Lambda sets.
    check_lambda_env()?;
    let function = &function;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(function.handle(event.payload).await)
    }))
    .await
}
