#!/bin/sh
# LocalStack init hook (docker compose): the queue and its dead-letter queue.
awslocal sqs create-queue --queue-name events-dlq
awslocal sqs create-queue --queue-name events --attributes '{"VisibilityTimeout":"30","RedrivePolicy":"{\"deadLetterTargetArn\":\"arn:aws:sqs:us-east-1:000000000000:events-dlq\",\"maxReceiveCount\":\"5\"}"}'
