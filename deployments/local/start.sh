#!/usr/bin/env bash
# Starts everything the processor needs locally, idempotently: PostgreSQL with its
# database, LocalStack, and the queue with its dead-letter queue and redrive policy.
# Run again, it reuses what is already running.
source "$(dirname "$0")/env.sh"
here=$(dirname "$0")

"$here/postgres.sh" start
"$here/localstack.sh" start

# The dead-letter queue first: the main queue's redrive policy names its ARN.
aws sqs create-queue --queue-name "$SQS_DLQ_NAME" >/dev/null
dlq_url=$(aws sqs get-queue-url --queue-name "$SQS_DLQ_NAME" --output text --query QueueUrl)
dlq_arn=$(aws sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names QueueArn --output text --query Attributes.QueueArn)
attributes=$(printf '{"VisibilityTimeout":"%s","RedrivePolicy":"{\\"deadLetterTargetArn\\":\\"%s\\",\\"maxReceiveCount\\":\\"%s\\"}"}' \
  "$SQS_VISIBILITY_TIMEOUT_SECS" "$dlq_arn" "$SQS_MAX_RECEIVE_COUNT")
queue_url=$(aws sqs create-queue --queue-name "$SQS_QUEUE_NAME" --output text --query QueueUrl)
# create-queue keeps an existing queue's attributes; set them so changed settings apply.
aws sqs set-queue-attributes --queue-url "$queue_url" --attributes "$attributes"
log "ready: PostgreSQL at $DATABASE_URL, queue $queue_url (dead letters: $SQS_DLQ_NAME after $SQS_MAX_RECEIVE_COUNT receives)"
