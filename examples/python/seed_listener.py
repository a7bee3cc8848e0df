"""The seed sample's test-only listener function, as a process.

In the seed, a Lambda function triggered by the destination bucket writes each new
object into a DynamoDB results table, which the test then polls. Here the destination
bucket's notifications reach this process through its own SQS queue subscribed to the
bucket's SNS topic (the emulator runs no Lambda); it writes one item per object, keyed
like the seed's (`id` = the object key), with the object's text, and, like the seed, no
TTL: the table grows with every test.

    python3 seed_listener.py --table seed-results
"""

import argparse
import json
import time
import urllib.parse

import boto3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", default="seed-results")
    parser.add_argument("--topic", default="roundtrip-uppercase-dst-events")
    parser.add_argument("--queue", default="seed-listener")
    args = parser.parse_args()

    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    sns = boto3.client("sns")
    dynamodb = boto3.client("dynamodb")

    try:
        dynamodb.create_table(
            TableName=args.table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except dynamodb.exceptions.ResourceInUseException:
        pass
    queue_url = sqs.create_queue(QueueName=args.queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    topic_arn = sns.create_topic(Name=args.topic)["TopicArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    print("seed listener ready", flush=True)

    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20
        ).get("Messages", [])
        for message in messages:
            event = json.loads(message["Body"])
            for record in event.get("Records", []):
                if not record.get("eventName", "").startswith("ObjectCreated:"):
                    continue
                bucket = record["s3"]["bucket"]["name"]
                key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
                dynamodb.put_item(
                    TableName=args.table,
                    Item={
                        "id": {"S": key},
                        "message": {"S": body},
                        "written_at": {"N": str(int(time.time() * 1000))},
                    },
                )
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


if __name__ == "__main__":
    main()
