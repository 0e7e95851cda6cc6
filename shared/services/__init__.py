"""Pure domain services: rules only. They take ports as arguments and never import boto3."""
