# The shared conformance vectors (schemas/vectors/*.json but sse-frames.json): JSON::Validator
# must reach every case's verdict, as Python's jsonschema and JS's ajv do.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Basename qw(basename);
use Gateway::Client::Details qw(validation_details);
use JSON::Validator::Schema::Draft7;
use Test::More;
use TestGateway qw(schemas_dir read_json);

my $schemas = schemas_dir();
my @files = grep { basename($_) ne 'sse-frames.json' } glob "$schemas/vectors/*.json";
ok scalar @files, 'the schema vectors are there' or BAIL_OUT("no vectors in $schemas/vectors");

for my $file (@files) {
    my $vectors = read_json($file);
    my $schema  = read_json("$schemas/$vectors->{schema}");
    my %validators;
    subtest basename($file) => sub {
        for my $case (@{ $vectors->{cases} }) {
            my $definition = $case->{definition} // '';
            my $validator = $validators{$definition} //= validator_for($schema, $definition);
            # The gateway's paths, in its order (what validate_request reports). First:
            # JSON::Validator stringifies the numbers it checks.
            my $target = length $definition ? $schema->{definitions}{$definition} : $schema;
            my @details = validation_details($target, $case->{data}, $schema);
            my @errors = $validator->validate($case->{data});
            my $verdict = @errors ? 0 : 1;
            is $verdict, ($case->{valid} ? 1 : 0), $case->{description}
                or diag explain [map {"$_"} @errors];
            is_deeply [map { $_->{path} } @details], $case->{details} // [], "$case->{description}: details"
                or diag explain \@details;
        }
    };
}

# The whole schema, or one of its definitions (refs inside still resolve against it).
sub validator_for {
    my ($schema, $definition) = @_;
    return JSON::Validator::Schema::Draft7->new($schema) unless length $definition;
    return JSON::Validator::Schema::Draft7->new({
        '$schema'   => 'http://json-schema.org/draft-07/schema#',
        definitions => $schema->{definitions},
        '$ref'      => "#/definitions/$definition",
    });
}

done_testing;
