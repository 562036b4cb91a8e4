#!/usr/bin/env perl
# The test operation `conform.steps` served with the Perl kit (Gateway::Worker), on the
# long-job pattern, for tests/test_conform.py: `gateway conform --claims long` must pass it.
#
#   GATEWAY_BROKER_URL=amqp://... perl tests/conform/worker.pl
#
# It checks each request's shape (an off-contract one fails `invalid_request`), works
# `steps` steps of `seconds` each on AnyEvent timers (the event loop keeps sending
# heartbeats and hearing cancels), with a progress answer after each, and fails with the
# code `fail` when asked to.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../clients/perl/lib";

use AnyEvent;
use B ();
use Gateway::Worker;
use Gateway::Worker::Failure;

my %KNOWN = map { $_ => 1 } qw(steps seconds fail);

# A JSON number, not a string of digits: JSON::PP decodes numbers to IVs or NVs, strings
# to PVs (asked before anything stringifies the value).
sub is_number {
    my ($value) = @_;
    return 0 if !defined $value || ref $value;
    my $flags = B::svref_2object(\$value)->FLAGS;
    return ($flags & (B::SVp_IOK | B::SVp_NOK)) && !($flags & B::SVp_POK);
}

# What is wrong with a request, against the contract (tests/conform/conform.steps.json).
sub problem {
    my ($request) = @_;
    return 'the request is not an object' unless ref $request eq 'HASH';
    my @unknown = grep { !$KNOWN{$_} } sort keys %$request;
    return "unknown properties: @unknown" if @unknown;
    my $steps = $request->{steps};
    return 'steps must be an integer from 1 to 50'
        unless is_number($steps) && $steps == int $steps && $steps >= 1 && $steps <= 50;
    my $seconds = $request->{seconds} // 0;
    return 'seconds must be a number from 0 to 5'
        unless is_number($seconds) && $seconds >= 0 && $seconds <= 5;
    return 'fail must be a string' if exists $request->{fail} && (ref $request->{fail} || !length($request->{fail} // ''));
    return;
}

my $worker = Gateway::Worker->new(broker_url => $ENV{GATEWAY_BROKER_URL});

$worker->operation('conform.steps' => sub {
    my ($request, $job) = @_;
    if (defined(my $problem = problem($request))) {
        die Gateway::Worker::Failure->new(code => 'invalid_request', message => $problem);
    }
    my ($total, $seconds) = ($request->{steps}, $request->{seconds} // 0);
    my $finished = AnyEvent->condvar;
    my $done = 0;
    my $timer;
    my $step;
    $step = sub {
        $timer = AnyEvent->timer(after => $seconds, cb => sub {
            return if $job->cancelled;
            $job->progress({ done => ++$done, total => $total });
            if ($done < $total) {
                $step->();
            }
            elsif (defined $request->{fail}) {
                undef $step;
                $finished->croak(Gateway::Worker::Failure->new(code => $request->{fail}, message => 'failed, as the request asked'));
            }
            else {
                undef $step;
                $finished->send({ steps => 0 + $total });
            }
        });
    };
    $job->on_cancel(sub { undef $timer; undef $step });
    $step->();
    return $finished;
}, long_running => 1);

$worker->run;
