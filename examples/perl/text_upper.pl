#!/usr/bin/env perl
# Example Perl worker for the operation text.upper: {"text": "..."} -> {"text": "..."}
# upper-cased.
#
# To show how a worker fails a job on purpose, it refuses the text "fail": the job then
# fails with the error {"code": "refused", "message": "..."}.
#
#   GATEWAY_BROKER_URL=amqp://guest:guest@127.0.0.1:5673/ perl examples/perl/text_upper.pl

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../clients/perl/lib";

use Gateway::Worker;

my $worker = Gateway::Worker->new(
    broker_url => $ENV{GATEWAY_BROKER_URL} || 'amqp://guest:guest@127.0.0.1:5673/',
);

$worker->operation('text.upper' => sub {
    my ($request, $job) = @_;
    die Gateway::Worker::Failure->new(code => 'refused', message => 'this worker refuses the text "fail"')
        if $request->{text} eq 'fail';
    return { text => uc $request->{text} };
});

$worker->run;
