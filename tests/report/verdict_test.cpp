// The run's verdict: a finite run at chance accuracy, with a loss that did not fall or a dead
// layer, did not learn.
#include <limits>

#include <gtest/gtest.h>

#include "nanguard/report/verdict.h"

namespace nanguard::report {
namespace {

VerdictInputs mnist_like(double accuracy) {
  VerdictInputs in;
  in.initial_loss = 2.35;
  in.final_loss = 0.05;
  in.accuracy = accuracy;
  in.evaluated = 10000;
  in.classes = 10;
  in.majority_fraction = 0.1135;
  return in;
}

TEST(Verdict, ATrainedClassifierLearned) {
  const RunVerdict v = judge_run(mnist_like(0.977));
  EXPECT_TRUE(v.learned);
  EXPECT_EQ(v.headline, "this run learned: accuracy 97.7% against 11.3% for the majority class");
  EXPECT_NEAR(v.chance, 0.1135, 1e-12);
}

TEST(Verdict, ChanceAccuracyDidNotLearn) {
  VerdictInputs in = mnist_like(0.101);
  in.final_loss = 2.30;
  const RunVerdict v = judge_run(in);
  EXPECT_FALSE(v.learned);
  EXPECT_EQ(v.headline, "this run did not learn: accuracy 10.1% is no better than always predicting the majority class (11.3%)");
  ASSERT_EQ(v.reasons.size(), 2u);
  EXPECT_NE(v.reasons[1].find("did not fall"), std::string::npos);
}

TEST(Verdict, TheMarginGrowsOnASmallHeldOutSet) {
  VerdictInputs in = mnist_like(0.2);
  in.majority_fraction = 0.1;
  in.evaluated = 100;  // 3 standard errors of 10% on 100 samples: 9 points
  EXPECT_TRUE(judge_run(in).learned);
  in.accuracy = 0.18;
  EXPECT_FALSE(judge_run(in).learned);
  EXPECT_NE(judge_run(in).headline.find("chance level"), std::string::npos);
}

TEST(Verdict, ADeadLayerOrAStopIsNotLearning) {
  VerdictInputs in = mnist_like(0.95);
  in.dead_layers = {"layers.1.dense"};
  RunVerdict v = judge_run(in);
  EXPECT_FALSE(v.learned);
  EXPECT_EQ(v.headline, "this run did not learn: every unit of layers.1.dense was dead at the last sampled step");
  in.dead_layers.clear();
  in.stopped = true;
  EXPECT_FALSE(judge_run(in).learned);
}

TEST(Verdict, ALossThatDidNotFallWithoutAccuracy) {
  VerdictInputs in;
  in.initial_loss = 1.0;
  in.final_loss = 0.95;
  EXPECT_FALSE(judge_run(in).learned);
  in.final_loss = std::numeric_limits<double>::infinity();
  EXPECT_EQ(judge_run(in).headline, "this run did not learn: the final training loss is not finite");
  in.final_loss = 0.3;
  const RunVerdict v = judge_run(in);
  EXPECT_TRUE(v.learned);
  EXPECT_EQ(v.headline, "this run learned: the training loss fell from 1 to 0.3");
}

TEST(Verdict, NothingToMeasure) {
  const RunVerdict v = judge_run(VerdictInputs{});
  EXPECT_TRUE(v.learned);
  EXPECT_EQ(v.headline, "this run finished; no learning measure was available");
}

}  // namespace
}  // namespace nanguard::report
